/**
 * Reading JSON that Go programs (flannel, its tools) write and read, with Go's encoding/json
 * rules: object keys match struct field names case-insensitively, and keys naming no field are
 * ignored. Keeping these rules means a config or lease that flannel accepts, weft accepts too.
 */
import { z } from 'zod';
import { messageOf } from '../errors/index.js';

/**
 * Renames the keys of `value` that match one of `names` case-insensitively to that spelling and
 * drops the others. A later duplicate wins, as in Go. A null value is dropped too: in Go it
 * leaves the field at its default. Non-objects pass through for the schema to reject.
 */
export function matchGoFields(value: unknown, names: readonly string[]): unknown {
  if (!isJsonObject(value)) return value;
  const byFolded = new Map(names.map((name) => [name.toLowerCase(), name]));
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    const name = byFolded.get(key.toLowerCase());
    if (name !== undefined && v !== null) out[name] = v;
  }
  return out;
}

/** True for a JSON object (not an array, not null). */
export function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A zod object schema whose keys are Go field names, matched as Go matches them. */
export function goStruct<T extends z.ZodRawShape>(shape: T) {
  const names = Object.keys(shape);
  return z.preprocess((value) => matchGoFields(value, names), z.object(shape));
}

/** Outcome of {@link decodeJson}: the value, or the field at fault (dotted path, '' for the whole) and why. */
export type Decoded<T> = { ok: true; value: T } | { ok: false; field: string; message: string };

/** Parses `input` (JSON text, or an already parsed value) with `schema`, reporting the first problem. */
export function decodeJson<S extends z.ZodType>(input: unknown, schema: S): Decoded<z.output<S>> {
  let value = input;
  if (typeof input === 'string') {
    try {
      value = JSON.parse(input);
    } catch (err) {
      return { ok: false, field: '', message: `not valid JSON (${messageOf(err)})` };
    }
  }
  const result = schema.safeParse(value);
  if (result.success) return { ok: true, value: result.data };
  const issue = result.error.issues[0];
  return { ok: false, field: issue?.path.join('.') ?? '', message: issue?.message ?? 'invalid' };
}
