/**
 * How weftctl prints: a table for people by default, or the same data as JSON or YAML for
 * scripts (`-o json|yaml`). Commands hand over their data once and say how it looks as a table,
 * so the machine formats always carry every field, not the columns that fit a terminal.
 */
import { stringify } from 'yaml';
import { terminalText } from '../escape/index.js';

/** The output formats of `-o`. */
export const OUTPUT_FORMATS = ['table', 'wide', 'json', 'yaml'] as const;
/** The formats of `-o`: `wide` is a table with more columns, where a command has them. */
export type OutputFlag = (typeof OUTPUT_FORMATS)[number];
/** How a command prints: `wide` is a table (see {@link CommandContext.wide}). */
export type OutputFormat = Exclude<OutputFlag, 'wide'>;

/** A table: column headers and rows of cells. */
export interface Table {
  headers: readonly string[];
  rows: readonly (readonly string[])[];
}

/**
 * Formats a table with columns padded to their widest cell, two spaces apart, headers in upper
 * case as kubectl prints them; the last column is not padded. Every cell goes through
 * terminalText: cells come from the registry, and a name must not move the cursor or fake a row.
 */
export function formatTable(table: Table): string {
  const headers = table.headers.map((h) => terminalText(h.toUpperCase()));
  const rows = table.rows.map((r) => r.map((c) => terminalText(c)));
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    headers
      .map((_, i) => (i === headers.length - 1 ? (cells[i] ?? '') : (cells[i] ?? '').padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

/** `data` as JSON (two-space indent) or YAML; the multi-document form for a list of objects. */
export function formatData(format: 'json' | 'yaml', data: unknown): string {
  if (format === 'json') return `${JSON.stringify(data, null, 2)}\n`;
  return stringify(data, { lineWidth: 0 });
}

/** `value` or `-` for a missing one, as tables show absent fields. */
export function cell(value: unknown): string {
  if (value === undefined || value === null || value === '') return '<none>';
  if (Array.isArray(value)) return value.length ? value.map(String).join(',') : '<none>';
  return String(value);
}

/** A duration in seconds as kubectl prints ages: `45s`, `12m`, `3h20m`, `5d`. */
export function formatAge(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return m % 60 ? `${h}h${m % 60}m` : `${h}h`;
  return `${Math.floor(h / 24)}d`;
}
