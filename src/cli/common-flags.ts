/**
 * Flags every weft program has in the same form: the log level of the daemons, `--help` and
 * `--version`. One definition, so names, aliases and the short-circuit behaviour (both work with
 * a broken environment) cannot drift between programs.
 */
import { boolFlag, choiceFlag } from './flag-parser.js';

/** Log levels of pino, lowest first. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

/** `--help` / `-h`; `description` says what it shows. */
export function helpFlag(description = 'Print this help and exit.') {
  return boolFlag({ name: 'help', aliases: ['h'], description, env: false, shortCircuit: true });
}

/** `--version`. */
export const VERSION_FLAG = boolFlag({
  name: 'version',
  description: 'Print the version and exit.',
  env: false,
  shortCircuit: true,
});

/** The daemons' last flags, in help order: `--log-level`, `--help`, `--version`. */
export const DAEMON_TAIL_FLAGS = {
  logLevel: choiceFlag({
    name: 'log-level',
    metavar: '<level>',
    description: 'Lowest level of log messages written.',
    choices: LOG_LEVELS,
    default: 'info',
  }),
  help: helpFlag(),
  version: VERSION_FLAG,
} as const;
