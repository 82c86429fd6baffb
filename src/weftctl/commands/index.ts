/** Every weftctl command, in the order `weftctl --help` lists them. */
import type { Command } from '../command.js';
import { configCommands } from './config.js';
import { labCommands } from './lab.js';
import { leaseCommands } from './leases.js';
import { objectCommands } from './objects.js';
import { statusCommands } from './status.js';

export const COMMANDS: readonly Command[] = [
  ...configCommands,
  ...leaseCommands,
  ...objectCommands,
  ...statusCommands,
  ...labCommands,
];
