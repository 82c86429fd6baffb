/**
 * The benchmark's kube-proxy-layout peer must keep kube-proxy's shape (one anonymous
 * `numgen … vmap` per service, one chain per endpoint, one `service-ips` element per service),
 * or the nftables comparison would silently measure something cheaper.
 */
import t from 'tap';
import { kubeLayoutRuleset, kubeLayoutServiceUpdate } from '../../bench/kube-nft-layout.js';
import { replacementIp, servicePortOf, workload } from '../../bench/workload.js';

const vmapRe = /numgen random mod (\d+) vmap \{ ([^}]*) \}/g;

t.test('full ruleset: one anonymous vmap per service with one element per endpoint', async (t) => {
  const services = 25;
  const perService = 4;
  const map = workload(services, perService);
  t.equal(map.size, services, 'the workload has one service port per service');
  const text = kubeLayoutRuleset(map, { clusterCidr: '10.64.0.0/10' });

  const vmaps = [...text.matchAll(vmapRe)];
  t.equal(vmaps.length, services, 'one anonymous vmap per service');
  for (const m of vmaps) {
    t.equal(Number(m[1]), perService, 'mod N is the endpoint count');
    const elements = (m[2] ?? '').split(' , ');
    t.equal(elements.length, perService, 'one vmap element per endpoint');
    t.match(elements[perService - 1] ?? '', new RegExp(`^${perService - 1} : goto endpoint-`));
  }
  t.equal(
    (text.match(/^add element ip kube-proxy service-ips \{ /gm) ?? []).length,
    services,
    'one service-ips element per service',
  );
  t.equal(
    (text.match(/^add chain ip kube-proxy service-[A-Z2-7]{8}-bench\/svc-\d+\/tcp\/http$/gm) ?? []).length,
    services,
  );
  t.equal(
    (text.match(/^add chain ip kube-proxy endpoint-[A-Z2-7]{8}-\S+__[\d.]+\/8080$/gm) ?? []).length,
    services * perService,
    'one chain per endpoint',
  );
  t.equal((text.match(/ dnat to /g) ?? []).length, services * perService, 'one dnat per endpoint');
  t.equal((text.match(/named|@endpoints|map .* typeof/g) ?? []).length, 0, 'no named endpoint maps');
});

t.test('one-endpoint change rewrites that service only', async (t) => {
  const before = servicePortOf(3, 2);
  const after = servicePortOf(3, 2, { firstAddress: replacementIp(0) });
  const tx = kubeLayoutServiceUpdate(before, after);
  const vmaps = [...tx.matchAll(vmapRe)];
  t.equal(vmaps.length, 1, 'one vmap, of the changed service');
  t.match(tx, new RegExp(`dnat to ${replacementIp(0).replace(/\./g, '\\.')}:8080`), 'the new endpoint');
  t.match(tx, /^flush chain ip kube-proxy service-/m, 'the service chain is rewritten');
  t.equal(
    (tx.match(/^delete chain .*endpoint-/gm) ?? []).length,
    1,
    'the replaced endpoint chain is deleted',
  );
  t.notMatch(tx, /service-ips/, 'dispatch unchanged');
  t.notMatch(tx, /svc-4\//, 'no other service');
});

t.test('one-service add adds its chains and its map element', async (t) => {
  const sp = servicePortOf(7, 10);
  const tx = kubeLayoutServiceUpdate(undefined, sp);
  t.equal([...tx.matchAll(vmapRe)].length, 1);
  t.equal((tx.match(/^add element ip kube-proxy service-ips /gm) ?? []).length, 1);
  t.notMatch(tx, /delete/);
  const removal = kubeLayoutServiceUpdate(sp, undefined);
  t.equal(
    (removal.match(/^delete chain /gm) ?? []).length,
    11,
    'removal deletes the service and endpoint chains',
  );
  t.match(removal, /^delete element ip kube-proxy service-ips /m);
});
