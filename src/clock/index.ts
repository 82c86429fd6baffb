/**
 * The one clock for durations: monotonic milliseconds (performance.now), which an NTP step or a
 * manual `date -s` cannot move. Wall-clock time (Date.now) is only for timestamps shown to people
 * or stored in the registry, never for "how long since" or "when next".
 */

/** Milliseconds on a monotonic clock with an arbitrary origin: compare two readings, never print one. */
export function monotonicMs(): number {
  return performance.now();
}

/** A source of monotonic time, injected where tests need to drive time. */
export interface MonotonicClock {
  now(): number;
}

/** The process's monotonic clock. */
export const monotonicClock: MonotonicClock = { now: monotonicMs };
