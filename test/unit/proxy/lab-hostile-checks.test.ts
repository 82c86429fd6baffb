/**
 * The pure checks of the hostile-input lab suite (test/helpers/proxy-lab-hostile.ts): a bug here
 * would make the lab suite pass whatever the daemons do, so each check is shown to catch what it
 * is for and to leave a clean node alone.
 */
import t from 'tap';
import {
  HOSTILE_STRINGS,
  boundsObjects,
  foreignRules,
  injectionObjects,
  namesKey,
  rejectionReport,
  type HostileObject,
} from '../../helpers/proxy-lab-hostile.js';
import type { LogRecord } from '../../lab/index.js';

const CLEAN_IPTABLES = [
  '*nat',
  ':PREROUTING ACCEPT [0:0]',
  ':INPUT ACCEPT [0:0]',
  ':WEFT-SERVICES - [0:0]',
  '-A PREROUTING -m comment --comment "weft service portals" -j WEFT-SERVICES',
  '-A WEFT-SERVICES -d 10.96.100.10/32 -p tcp -m tcp --dport 80 -j WEFT-SVC-ABC',
  'COMMIT',
].join('\n');
const CLEAN_NFT =
  'table ip weft {\n\tchain services {\n\t\tip daddr 10.96.100.10 tcp dport 80 accept\n\t}\n}\n';

t.test('foreignRules: a node with only the proxy rules is clean', async (t) => {
  t.same(foreignRules({ nft: CLEAN_NFT, iptables: CLEAN_IPTABLES, ip6tables: '' }), []);
  t.same(
    foreignRules({ nft: 'table ip weft-userspace {\n}\ntable ip nat {\n}\n', iptables: '', ip6tables: '' }),
    [],
  );
});

t.test("foreignRules: the issue's INPUT rule, a foreign table or chain, hostile text", async (t) => {
  const injected = CLEAN_IPTABLES.replace(
    'COMMIT',
    '-A INPUT -s 6.6.6.6/32 -j ACCEPT\n-A INPUT -s 6.6.6.6/32 -j ACCEPT\nCOMMIT',
  );
  const p = foreignRules({ nft: CLEAN_NFT, iptables: injected, ip6tables: '' });
  t.match(p.join('\n'), /rule the proxy does not own: "-A INPUT -s 6\.6\.6\.6\/32 -j ACCEPT" \(×2\)/);
  t.match(p.join('\n'), /iptables: the injected source 6\.6\.6\.6/);
  t.match(
    foreignRules({ nft: `${CLEAN_NFT}table ip evil {\n}\n`, iptables: '', ip6tables: '' }).join(),
    /foreign table ip "evil"/,
  );
  t.match(
    foreignRules({ nft: '', iptables: '*filter\n:SNEAKY - [0:0]\nCOMMIT', ip6tables: '' }).join(),
    /foreign chain "SNEAKY"/,
  );
  t.match(
    foreignRules({
      nft: CLEAN_NFT.replace('accept', 'comment "a\u202eb" accept'),
      iptables: '',
      ip6tables: '',
    }).join(),
    /control or bidi/,
  );
  t.match(
    foreignRules({
      nft: CLEAN_NFT.replace('10.96.100.10', '10.99.0.101'),
      iptables: '',
      ip6tables: '',
    }).join(),
    /etcd/,
  );
  t.same(
    foreignRules({ nft: CLEAN_NFT.replace('10.96.100.10', '10.99.0.11'), iptables: '', ip6tables: '' }),
    [],
    'a node address is not the underlay gateway',
  );
});

t.test('namesKey: a key, not a longer key it prefixes', async (t) => {
  const rec = (o: Record<string, unknown>): LogRecord => ({
    level: 40,
    msg: 'invalid Service skipped',
    ...o,
  });
  t.ok(namesKey(rec({ key: '/weft/services/default/h-1' }), '/weft/services/default/h-1'));
  t.ok(
    namesKey(rec({ err: 'Service /weft/services/default/h-1: field spec' }), '/weft/services/default/h-1'),
  );
  t.notOk(namesKey(rec({ key: '/weft/services/default/h-10' }), '/weft/services/default/h-1'));
});

t.test('rejectionReport: count, field, and the size case', async (t) => {
  const obj: HostileObject = {
    key: '/weft/services/default/x',
    value: '{}',
    reject: /spec\.ports\[0\]\.name/,
    what: 'x',
  };
  const good: LogRecord = {
    level: 40,
    msg: 'invalid Service skipped',
    key: obj.key,
    field: 'spec.ports[0].name',
  };
  const noField: LogRecord = { level: 40, msg: 'invalid Service skipped', key: obj.key, field: '' };
  t.same(rejectionReport([good, good], obj).count, 2);
  t.ok(rejectionReport([good], obj).withField);
  t.notOk(rejectionReport([noField], obj).withField);
  const big: HostileObject = { ...obj, reject: /./ };
  t.notOk(rejectionReport([noField], big).withField, 'an empty field and no word about size is not enough');
  t.ok(rejectionReport([{ ...noField, err: 'object of 3145800 bytes over the limit' }], big).withField);
});

t.test('the objects: one per field and string, unique keys, all to be rejected', async (t) => {
  const inj = injectionObjects('10.244.1.2');
  t.equal(inj.length, HOSTILE_STRINGS.length * 14);
  t.ok(inj.every((o) => o.reject));
  const all = [...inj, ...boundsObjects('10.244.1.2', '10.99.0.101', '10.99.0.1')];
  t.equal(new Set(all.map((o) => o.key)).size, all.length, 'no key twice');
  const big = all.find((o) => o.key.endsWith('/big'));
  t.ok(big && big.value.length > 3_000_000, 'the big object is over 3 MB');
  const wide = all.find((o) => o.key.endsWith('/wide-0'));
  const parsed = JSON.parse(wide?.value ?? '{}') as { endpoints: unknown[]; ports: unknown[] };
  t.same([parsed.endpoints.length, parsed.ports.length], [1000, 1000]);
});
