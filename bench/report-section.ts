/** What bench/report.ts hands each benchmark's section renderer. */

/** What a section renderer gets. */
export interface SectionInput {
  /** The parsed results file. */
  data: unknown;
  /** Its path relative to the repository root. */
  file: string;
  /** Writes a chart (SVG text) to docs/bench/<name> and returns the link for the markdown. */
  writeChart(name: string, svg: string): string;
}

/** One benchmark's section of docs/benchmarks.md. */
export interface Section {
  benchmark: string;
  render(input: SectionInput): string;
}

/** An ISO date as `YYYY-MM-DD HH:MM UTC`, the form every section states its run's date in. */
export function fmtDate(iso: string): string {
  return `${iso.slice(0, 16).replace('T', ' ')} UTC`;
}
