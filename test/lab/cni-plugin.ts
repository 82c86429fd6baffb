/**
 * weft-cni as the lab runs it: a process per call, like a runtime on a node would.
 *
 * Where the plugin's JavaScript comes from depends on how the lab itself runs:
 * - compiled (dist/, `make demo`): dist/src/cni/main.js, built by the same tsc run as the lab,
 *   so the two always match;
 * - from TypeScript sources (tap): a private transpile of src/cni into the run dir
 *   (build-plugin.ts). dist/ may then be missing, stale, or being rebuilt by someone else.
 */
import { existsSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, WeftError } from '../../src/errors/index.js';

/** True when this module is the tsc output under dist/, not the TypeScript source. */
const COMPILED = import.meta.url.endsWith('.js');

/** Where Debian (containernetworking-plugins) and upstream install the reference plugins. */
export const CNI_PLUGIN_DIRS = ['/usr/lib/cni', '/opt/cni/bin'] as const;

/** The reference plugins weft-cni delegates to, which every CNI_PATH of the lab holds. */
export const REFERENCE_PLUGINS = ['bridge', 'host-local', 'loopback'] as const;

/** The name of the plugin in CNI_PATH: the `type` of its network config. */
export const WEFT_CNI_TYPE = 'weft-cni';

function labError(message: string, details: Record<string, unknown> = {}): WeftError {
  return new WeftError(ErrorCodes.LAB, message, details);
}

/**
 * weft-cni's main.js for a lab: dist's when the lab runs compiled, else a fresh transpile of
 * the sources into `buildDir` (see the module comment for why).
 */
export async function resolvePluginMain(buildDir: string): Promise<string> {
  if (!COMPILED) {
    // Imported here only: it loads the compiler, which the compiled lab (the demo) never needs.
    const { buildPlugin } = await import('./build-plugin.js');
    return buildPlugin(buildDir);
  }
  const main = fileURLToPath(new URL('../../src/cni/main.js', import.meta.url));
  if (!existsSync(main)) throw labError(`${main} is missing: run \`make build\``, { main });
  return main;
}

/** The directory holding the reference plugins; throws naming the Debian package when none does. */
export function referencePluginDir(): string {
  const dir = CNI_PLUGIN_DIRS.find((d) => REFERENCE_PLUGINS.every((p) => existsSync(join(d, p))));
  if (!dir) {
    throw labError(
      `the CNI reference plugins (${REFERENCE_PLUGINS.join(', ')}) are in none of ` +
        `${CNI_PLUGIN_DIRS.join(', ')}: install containernetworking-plugins (make deps)`,
    );
  }
  return dir;
}

/**
 * Fills `binDir` as a node's CNI_PATH: symlinks to the reference plugins, and `weft-cni`, a
 * script that runs `main` with this Node. A script rather than a symlink to bin/weft-cni, which
 * always runs dist/. Returns the path of `weft-cni`.
 */
export function prepareCniBin(binDir: string, main: string): string {
  const from = referencePluginDir();
  // From scratch: a half-filled directory of an earlier failed attempt would make symlink fail.
  rmSync(binDir, { recursive: true, force: true });
  mkdirSync(binDir, { recursive: true });
  for (const p of REFERENCE_PLUGINS) symlinkSync(join(from, p), join(binDir, p));
  const plugin = join(binDir, WEFT_CNI_TYPE);
  // exec keeps the caller's stdin, stdout and the plugin's exit status, as bin/weft-cni does.
  // NODE_OPTIONS goes: under tap it loads a process-tracking hook into every Node child, which
  // costs each call most of a second; a runtime on a real node sets none.
  writeFileSync(
    plugin,
    `#!/bin/sh\nunset NODE_OPTIONS\nexec ${shellQuote(process.execPath)} ${shellQuote(main)} "$@"\n`,
    { mode: 0o755 },
  );
  return plugin;
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}
