/**
 * At boot etcd may come up after weft's daemons. Both wait for it (not ready meanwhile, no exit
 * that would spend the unit's restart budget) and become ready once it answers.
 */
import t from 'tap';
import { FlannelCluster, Lab, ProxyCluster } from '../../lab/index.js';

t.setTimeout(180_000);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('both daemons wait for etcd at start and become ready once it answers', async (t) => {
  const lab = await Lab.create({ nodes: 1 });
  t.teardown(() => lab.teardown());
  const node = lab.nodes[0];
  const etcd = lab.etcd[0];
  if (!node || !etcd) throw new Error('lab without a node or etcd');

  const flannel = await FlannelCluster.create(lab, { start: false });
  const proxy = await ProxyCluster.create(lab, { mode: 'nftables', start: false });

  await etcd.stop();
  flannel.start(node);
  proxy.start(node);
  await sleep(6_000);

  t.ok(flannel.daemon(node).process.running, 'weft-flanneld still runs without etcd');
  t.ok(proxy.daemon(node).process.running, 'weft-proxy still runs without etcd');
  const fl = await flannel.health(node, '/readyz');
  t.equal(fl.status, 503, 'weft-flanneld not ready');
  t.match(fl.body, /waiting for the registry/);
  const px = await proxy.health(node, '/readyz');
  t.equal(px.status, 503, 'weft-proxy not ready');
  // etcd's client gives up a connection attempt after 5 s; then each daemon logs and retries.
  const logged = async (read: () => Promise<string> | string, re: RegExp) => {
    const end = Date.now() + 30_000;
    while (!re.test(await read())) {
      if (Date.now() > end) return false;
      await sleep(250);
    }
    return true;
  };
  t.ok(
    await logged(() => flannel.log(node), /connect to the registry failed; retrying/),
    'flanneld logs its retry',
  );
  t.ok(await logged(() => proxy.log(node), /registry not reachable; retrying/), 'proxy logs its retry');
  t.ok(flannel.daemon(node).process.running && proxy.daemon(node).process.running, 'both still run');

  await etcd.start();
  await flannel.waitReady([node], 60_000);
  await proxy.waitSynced([node], 0, 60_000);
  t.equal((await proxy.health(node, '/readyz')).status, 200, 'weft-proxy ready once etcd answers');
});
