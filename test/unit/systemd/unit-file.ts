/**
 * Helpers for the tests of systemd/: reading unit and environment files, and running
 * `systemd-analyze verify` on copies of the units whose ExecStart names files that exist (verify
 * fails on a missing executable, and the units name the installed /usr/local/bin paths).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const SYSTEMD_DIR = join(REPO_ROOT, 'systemd');
/** The units, by daemon name; each has systemd/<name>.service and systemd/default/<name>. */
export const UNITS = ['weft-flanneld', 'weft-proxy', 'weft-controller'] as const;
export type UnitName = (typeof UNITS)[number];
/** Where the shipped units expect the commands. */
export const INSTALLED_BIN_DIR = '/usr/local/bin';

/** A unit file: per section, its directives in order (a key may repeat). */
export type UnitFile = Map<string, [string, string][]>;

/** Parses systemd's ini syntax (comments, sections, `Key=value`; no line continuations used). */
export function parseUnit(text: string): UnitFile {
  const out: UnitFile = new Map();
  let section: [string, string][] | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const head = /^\[(.+)\]$/.exec(line);
    if (head) {
      section = [];
      out.set(head[1] as string, section);
      continue;
    }
    const eq = line.indexOf('=');
    if (!section || eq < 0) throw new Error(`not a directive: ${line}`);
    section.push([line.slice(0, eq).trim(), line.slice(eq + 1).trim()]);
  }
  return out;
}

/** Every value of `key` in `section`. */
export function values(unit: UnitFile, section: string, key: string): string[] {
  return (unit.get(section) ?? []).filter(([k]) => k === key).map(([, v]) => v);
}

/** Every word of every value of `key` (for list directives such as After= or ReadWritePaths=). */
export function words(unit: UnitFile, section: string, key: string): string[] {
  return values(unit, section, key).flatMap((v) => v.split(/\s+/).filter(Boolean));
}

export function unitPath(name: UnitName): string {
  return join(SYSTEMD_DIR, `${name}.service`);
}

export function readUnit(name: UnitName): UnitFile {
  return parseUnit(readFileSync(unitPath(name), 'utf8'));
}

/**
 * The variables an environment file sets or documents: `NAME=` lines, commented out or not.
 * Other comment lines are prose.
 */
export function envFileVariables(text: string): { name: string; value: string; active: boolean }[] {
  const out = [];
  for (const raw of text.split('\n')) {
    const m = /^(#?)([A-Z][A-Z0-9_]*)=(.*)$/.exec(raw.trim());
    if (m) out.push({ name: m[2] as string, value: m[3] as string, active: m[1] === '' });
  }
  return out;
}

/** The output and exit code of `systemd-analyze verify`. */
export interface VerifyResult {
  code: number;
  output: string;
}

/**
 * Runs `systemd-analyze verify` on unit files. Its exit code alone is not enough: it warns about
 * unknown keys and bad values (and ignores them) yet exits 0, so a result only counts as clean
 * when it also printed nothing (see {@link isClean}).
 */
export function verifyUnits(paths: readonly string[]): Promise<VerifyResult> {
  return new Promise((resolve) => {
    execFile(
      'systemd-analyze',
      ['verify', '--man=no', ...paths],
      { timeout: 60_000, env: { ...process.env, SYSTEMD_LOG_COLOR: '0', SYSTEMD_PAGER: '' } },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, output: `${stdout}${stderr}`.trim() });
      },
    );
  });
}

export function isClean(r: VerifyResult): boolean {
  return r.code === 0 && r.output === '';
}

/**
 * Copies the units into a new temp directory with ExecStart pointing into `binDir` instead of
 * /usr/local/bin, after `edit` (for negative cases); the caller removes `dir`.
 */
export function unitCopies(
  binDir: string,
  opts: { from?: string; edit?: (name: UnitName, text: string) => string } = {},
): { dir: string; paths: string[] } {
  const dir = mkdtempSync(join(tmpdir(), 'weft-units-'));
  const paths = UNITS.map((name) => {
    let text = readFileSync(join(opts.from ?? SYSTEMD_DIR, `${name}.service`), 'utf8');
    text = text.replace(/^ExecStart=\/usr\/local\/bin\//m, `ExecStart=${binDir}/`);
    if (opts.edit) text = opts.edit(name, text);
    const path = join(dir, `${name}.service`);
    writeFileSync(path, text);
    return path;
  });
  return { dir, paths };
}

/** `CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW` as setpriv's `-all,+net_admin,+net_raw`. */
export function setprivBoundingSet(unit: UnitFile): string {
  if (!values(unit, 'Service', 'CapabilityBoundingSet').length) {
    throw new Error('the unit has no CapabilityBoundingSet');
  }
  // `CapabilityBoundingSet=` (empty): no capability at all.
  const caps = words(unit, 'Service', 'CapabilityBoundingSet');
  return ['-all', ...caps.map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)].join(',');
}
