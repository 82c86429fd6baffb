/**
 * Golden files of the iptables mode: the whole `iptables-restore` input for the shared golden
 * services (full sync), and the input of a partial sync after one endpoint of default/web went
 * away. WEFT_UPDATE_GOLDEN=1 rewrites the files, so that a change shows up as a reviewed diff.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { buildRestoreInput, type IptablesRulesConfig } from '../../../src/proxy/iptables/index.js';
import { changedServicePorts, type ServicePort } from '../../../src/proxy/model/index.js';
import { goldenContext, goldenServicePorts } from '../../helpers/proxy-fixtures.js';

function golden(name: string): string {
  return fileURLToPath(new URL(`../../fixtures/proxy/golden/${name}`, import.meta.url));
}

function compareGolden(tt: Test, name: string, actual: string): void {
  const file = golden(name);
  if (process.env['WEFT_UPDATE_GOLDEN'] === '1') writeFileSync(file, actual);
  tt.equal(actual, readFileSync(file, 'utf8'), `${name} matches (WEFT_UPDATE_GOLDEN=1 rewrites it)`);
}

function config(): IptablesRulesConfig {
  const ctx = goldenContext();
  return {
    family: ctx.family,
    clusterCidr: ctx.clusterCidr,
    masqueradeAll: ctx.masqueradeAll,
    nodePortAddresses: ctx.nodePortAddresses,
    randomFully: true,
  };
}

/** The golden ports after the endpoint 10.244.3.2 of default/web left. */
export function withoutWebEndpoint(ports: Map<string, ServicePort>): Map<string, ServicePort> {
  const after = new Map(ports);
  const web = ports.get('default/web:http');
  if (!web) throw new Error('golden fixture has no default/web:http');
  after.set(web.id, { ...web, endpoints: web.endpoints.filter((e) => e.ip !== '10.244.3.2') });
  return after;
}

const before = goldenServicePorts();
const full = buildRestoreInput(config(), { servicePorts: before, changed: undefined, existingChains: [] });

t.test('full sync', async (t) => {
  compareGolden(t, 'iptables.txt', full.text);
  t.equal(full.deletedChains.length, 0, 'nothing to delete on a fresh node');
  t.equal(full.writtenServicePorts, before.size, 'every service port written');
});

t.test('partial sync: one endpoint of default/web removed', async (t) => {
  const after = withoutWebEndpoint(before);
  const changed = changedServicePorts(before, after);
  t.strictSame([...changed], ['default/web:http']);
  const partial = buildRestoreInput(config(), {
    servicePorts: after,
    changed,
    existingChains: full.activeChains,
  });
  compareGolden(t, 'iptables-partial.txt', partial.text);
  t.equal(partial.writtenServicePorts, 1, 'only default/web:http written');
  t.equal(partial.deletedChains.length, 1, "the removed endpoint's chain is deleted");
  const gone = partial.deletedChains[0] ?? '';
  t.ok(partial.text.includes(`:${gone} - [0:0]\n`), 'the stale chain is declared (flushed)');
  t.ok(partial.text.includes(`-X ${gone}\n`), 'then deleted');
  t.notOk(partial.text.includes('*mangle'), 'no canary on a partial sync');
  const perService = partial.text
    .split('\n')
    .filter((l) => /^-A WEFT-(SVC|SVL|EXT|FW|SEP)-/.test(l) && !l.includes('default/web:http'));
  t.strictSame(perService, [], 'no chain of an unchanged service port is written');
  t.ok(partial.text.includes('default/sticky:http cluster IP'), 'WEFT-SERVICES still lists every service');
  t.equal(partial.activeChains.size, full.activeChains.size - 1);
});
