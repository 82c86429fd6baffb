/** The delegate store's atomic writes: unique temp names, and no temp file of a killed writer left behind. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { loadDelegateConfig, saveDelegateConfig } from '../../../src/cni/delegate-store.js';
import type { DelegateConfig } from '../../../src/cni/delegate-config.js';

const config = { cniVersion: '1.0.0', name: 'cbr0', type: 'bridge' } as unknown as DelegateConfig;

t.test('a save removes temp files of killed writers, not those of live ones', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-cni-store-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const dead = spawnSync('true').pid;
  const stale = `.abc123.${dead}.0123abcd.tmp`;
  const live = `.def456.1.89abcdef.tmp`;
  writeFileSync(join(dir, stale), '{"half');
  writeFileSync(join(dir, live), '{"half');
  writeFileSync(join(dir, 'def456'), JSON.stringify(config));
  await saveDelegateConfig(dir, 'abc123', config);
  t.strictSame(readdirSync(dir).sort(), [live, 'abc123', 'def456'].sort());
  t.match(await loadDelegateConfig(dir, 'abc123'), { state: 'found', config: { type: 'bridge' } });
});

t.test('concurrent saves of one container never share a temp file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-cni-store-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await Promise.all(Array.from({ length: 20 }, () => saveDelegateConfig(dir, 'same', config)));
  t.strictSame(readdirSync(dir), ['same'], 'one file, no temp file left');
});
