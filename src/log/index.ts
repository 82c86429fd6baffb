/**
 * pino loggers. Every component takes a child of the root logger with `component` set, so one
 * log stream can be filtered per component.
 */
import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

let root: Logger | undefined;

/** The process-wide root logger; level from WEFT_LOG_LEVEL (default `info`). */
export function rootLogger(): Logger {
  root ??= pino({
    level: process.env.WEFT_LOG_LEVEL ?? 'info',
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
  return root;
}

/** Replace the root logger (daemons configure destination and level at start-up; tests silence it). */
export function setRootLogger(logger: Logger): void {
  root = logger;
}

/** A child logger for one component. */
export function componentLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return rootLogger().child({ component, ...bindings });
}

/** A logger that drops everything; for tests and library callers that pass none. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/**
 * A logger whose JSON lines go to `write` rather than stdout: for a program whose stdout is a
 * protocol (weft-cni prints its result there) and whose diagnostics are collected (stderr).
 */
export function lineLogger(level: string, write: (line: string) => void): Logger {
  return pino(
    { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    { write: (line: string) => write(line) },
  );
}
