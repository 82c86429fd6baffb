/** weftctl's objects commands. */
import type { Command } from '../command.js';

export const objectCommands: Command[] = [];
