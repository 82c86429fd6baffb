/**
 * The election record: the value of the election key, `{"holder":ID,"token":N,"acquiredAt":ISO}`.
 * Pure encode/decode; the record is read from the registry, so decoding trusts nothing.
 */

/** Who leads, as the election key says. */
export interface ElectionRecord {
  /** Identity of the holder (e.g. `<hostname>_<pid>`). */
  holder: string;
  /**
   * Fencing token: the store revision of the write that won the election, so it grows with
   * every election. 0 while a candidate that just created the key has not stamped it yet.
   */
  token: number;
  /** When the holder won, ISO 8601 (wall clock: for people, never for durations). */
  acquiredAt: string;
}

/** Longest identity accepted (a hostname of 253 characters, `_`, a pid, with room). */
export const MAX_IDENTITY_LENGTH = 512;
/** Largest election value decoded; anything larger is not a record weft wrote. */
const MAX_RECORD_BYTES = 4096;

export function encodeRecord(r: ElectionRecord): string {
  return JSON.stringify({ holder: r.holder, token: r.token, acquiredAt: r.acquiredAt });
}

/** The record in `text`, or undefined when it is not a valid one. */
export function decodeRecord(text: string): ElectionRecord | undefined {
  if (text.length > MAX_RECORD_BYTES) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
  const { holder, token, acquiredAt } = raw as Record<string, unknown>;
  if (!validIdentity(holder)) return undefined;
  if (typeof token !== 'number' || !Number.isSafeInteger(token) || token < 0) return undefined;
  if (typeof acquiredAt !== 'string' || acquiredAt.length > 64 || Number.isNaN(Date.parse(acquiredAt)))
    return undefined;
  return { holder, token, acquiredAt };
}

/** A non-empty identity without control characters, of bounded length. */
export function validIdentity(id: unknown): id is string {
  if (typeof id !== 'string' || id.length === 0 || id.length > MAX_IDENTITY_LENGTH) return false;
  for (let i = 0; i < id.length; i++) {
    const c = id.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return false;
  }
  return true;
}
