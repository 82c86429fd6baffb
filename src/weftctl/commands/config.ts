/** weftctl's config commands. */
import type { Command } from '../command.js';

export const configCommands: Command[] = [];
