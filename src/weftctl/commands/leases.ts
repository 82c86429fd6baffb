/** weftctl's leases commands. */
import type { Command } from '../command.js';

export const leaseCommands: Command[] = [];
