/**
 * Each container's delegate config, saved at ADD as `<dataDir>/<containerID>` (flannel's
 * layout and format) and used again at DEL: subnet.env can change between the two (a new
 * lease after the daemon lost its old one), and DEL must release what ADD allocated.
 */
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { removeStaleTempFiles, tempFileName } from '../atomic-file/index.js';
import { messageOf } from '../errors/index.js';
import { CniError, CniErrorCodes } from './cni-error.js';
import type { DelegateConfig } from './delegate-config.js';

/** The file holding one container's delegate config. */
export function savedConfigPath(dataDir: string, containerId: string): string {
  return join(dataDir, containerId);
}

function ioError(what: string, path: string, err: unknown): CniError {
  return new CniError(CniErrorCodes.IO_FAILURE, `failed to ${what} ${path}: ${messageOf(err)}`);
}

/**
 * Writes the config through a temp file and a rename, so a crash leaves the old file or the
 * new one, never half of one. Owner-only: runtimeConfig can carry data other users should not
 * read. Temp files of writers that were killed before their rename are removed first.
 */
export async function saveDelegateConfig(
  dataDir: string,
  containerId: string,
  config: DelegateConfig,
): Promise<void> {
  const path = savedConfigPath(dataDir, containerId);
  const tmp = join(dataDir, tempFileName(containerId));
  try {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    await removeStaleTempFiles(dataDir);
    await writeFile(tmp, JSON.stringify(config), { mode: 0o600, flag: 'wx' });
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw ioError('save delegate config to', path, err);
  }
}

/** What {@link loadDelegateConfig} found. */
export type LoadedConfig =
  { state: 'found'; config: DelegateConfig } | { state: 'missing' } | { state: 'corrupt'; reason: string };

/** The saved config; `missing` when there is none, `corrupt` when it cannot be used. */
export async function loadDelegateConfig(dataDir: string, containerId: string): Promise<LoadedConfig> {
  const path = savedConfigPath(dataDir, containerId);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'missing' };
    throw ioError('read saved delegate config', path, err);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { state: 'corrupt', reason: `${path}: not JSON (${messageOf(err)})` };
  }
  const c = value as Partial<DelegateConfig> | null;
  if (typeof c !== 'object' || c === null || Array.isArray(c) || typeof c.type !== 'string') {
    return { state: 'corrupt', reason: `${path}: not a CNI config with a type` };
  }
  return { state: 'found', config: c as DelegateConfig };
}

/** Removes the saved config; already gone is fine (DEL may be repeated). */
export async function removeDelegateConfig(dataDir: string, containerId: string): Promise<void> {
  const path = savedConfigPath(dataDir, containerId);
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError('remove', path, err);
  }
}
