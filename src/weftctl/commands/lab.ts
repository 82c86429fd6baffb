/** weftctl's lab commands. */
import type { Command } from '../command.js';

export const labCommands: Command[] = [];
