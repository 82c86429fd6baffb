/** weft's version, from package.json next to dist/ (every program prints the same one). */
import { readFileSync } from 'node:fs';

let cached: string | undefined;

/** The `version` field of weft's package.json, or `unknown` when it cannot be read. */
export function weftVersion(): string {
  if (cached !== undefined) return cached;
  cached = 'unknown';
  // dist/src/cli/version.js is three levels below package.json, src/cli/version.ts two.
  for (const rel of ['../../../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name !== 'weft') continue;
      cached = pkg.version ?? 'unknown';
      break;
    } catch {
      // Not there: try the other layout.
    }
  }
  return cached;
}
