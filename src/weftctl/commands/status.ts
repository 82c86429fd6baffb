/** weftctl's status commands. */
import type { Command } from '../command.js';

export const statusCommands: Command[] = [];
