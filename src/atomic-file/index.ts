/**
 * Names of the temp files behind weft's atomic writes (write a temp file, rename it over the
 * target), and the removal of the ones a killed writer left behind. A `kill -9` between the write
 * and the rename leaves `.<name>.<pid>.<random>.tmp` next to the target; nothing else would ever
 * delete it, so each writer sweeps its own directory for files of exactly this pattern whose
 * writing process is gone.
 */
import { randomBytes } from 'node:crypto';
import { readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { processAlive } from '../exec/index.js';

/** A unique temp file name for `name` in the same directory: `.<name>.<pid>.<8 hex>.tmp`. */
export function tempFileName(name: string): string {
  return `.${name}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
}

const TEMP = /^\.(.+)\.(\d+)\.[0-9a-f]{8}\.tmp$/;

/**
 * Deletes temp files of {@link tempFileName}'s pattern in `dir` whose writer process no longer
 * runs (`name`, when given, restricts it to one target's temp files). Returns the names removed.
 * Never throws: a directory that cannot be read has nothing to sweep.
 */
export async function removeStaleTempFiles(dir: string, name?: string): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const entry of entries) {
    const m = TEMP.exec(entry);
    if (!m || (name !== undefined && m[1] !== name)) continue;
    const pid = Number(m[2]);
    // A live writer (a concurrent CNI call, say) is still going to rename its file.
    if (pid === process.pid || processAlive(pid)) continue;
    try {
      await unlink(join(dir, entry));
      removed.push(entry);
    } catch {
      // Gone already, or not ours to remove: either way nothing to do.
    }
  }
  return removed;
}
