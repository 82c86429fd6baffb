/** Links: veth and bridge creation, MTU, up/down, master, vxlan options, ensureVxlan. */
import { silentLogger } from '../../../src/log/index.js';
import { openNetlink } from '../../../src/netlink/index.js';
import { runInNetns } from '../../helpers/netns-test.js';
import { ipLinks } from './fixtures/iproute.js';

runInNetns(import.meta.url, async (t) => {
  const nl = openNetlink({ logger: silentLogger() });
  t.teardown(() => nl.close());

  await t.test('veth pair: both ends exist, point at each other', async (t) => {
    const { link, peer } = await nl.links.createVeth({ name: 'va', peer: 'vb', mtu: 1400 });
    t.match(link, { name: 'va', kind: 'veth', mtu: 1400, up: false });
    t.match(peer, { name: 'vb', kind: 'veth', mtu: 1400, up: false });
    t.not(link.index, peer.index);
    const [a] = await ipLinks('va');
    const [b] = await ipLinks('vb');
    t.equal(a?.ifindex, link.index);
    t.equal(b?.ifindex, peer.index);
    t.equal(a?.linkinfo?.info_kind, 'veth');
    t.equal(a?.mtu, 1400);
    t.equal(a?.address, link.mac);
  });

  await t.test('up and down', async (t) => {
    await nl.links.setUp('va');
    t.equal((await nl.links.get('va'))?.up, true);
    t.ok((await ipLinks('va'))[0]?.flags.includes('UP'), 'ip: UP');
    await nl.links.setDown('va');
    t.equal((await nl.links.get('va'))?.up, false);
    t.notOk((await ipLinks('va'))[0]?.flags.includes('UP'), 'ip: not UP');
    const vb = await nl.links.get('vb');
    await nl.links.setUp(vb?.index ?? 0);
    t.equal((await nl.links.get('vb'))?.up, true, 'by index');
  });

  await t.test('MTU change', async (t) => {
    await nl.links.setMtu('va', 1280);
    t.equal((await nl.links.get('va'))?.mtu, 1280);
    t.equal((await ipLinks('va'))[0]?.mtu, 1280);
  });

  await t.test('bridge, and a veth end as its port', async (t) => {
    const br = await nl.links.createBridge({ name: 'br0', mtu: 1400 });
    t.match(br, { name: 'br0', kind: 'bridge' });
    t.equal((await ipLinks('br0'))[0]?.linkinfo?.info_kind, 'bridge');
    await nl.links.setMaster('vb', 'br0');
    t.equal((await nl.links.get('vb'))?.master, br.index);
    t.equal((await ipLinks('vb'))[0]?.master, 'br0');
    await nl.links.setMaster('vb', null);
    t.equal((await nl.links.get('vb'))?.master, undefined);
    t.equal((await ipLinks('vb'))[0]?.master, undefined);
    await nl.links.delete(br.index);
    t.same(await ipLinks('br0'), []);
  });

  await t.test('vxlan with every option', async (t) => {
    const vx = await nl.links.createVxlan({
      name: 'vx7',
      id: 7,
      local: '192.0.2.7',
      dev: 'va',
      port: 4789,
      learning: true,
      gbp: true,
      mtu: 1230,
      mac: '0A:58:0A:F4:07:07',
    });
    t.match(vx, {
      name: 'vx7',
      mtu: 1230,
      mac: '0a:58:0a:f4:07:07',
      vxlan: { id: 7, local: '192.0.2.7', port: 4789, learning: true, gbp: true },
    });
    t.equal(vx.vxlan?.dev, (await nl.links.get('va'))?.index);
    const [ip] = await ipLinks('vx7');
    t.match(ip?.linkinfo?.info_data, {
      id: 7,
      local: '192.0.2.7',
      link: 'va',
      port: 4789,
      learning: true,
      gbp: true,
    });
    t.equal(ip?.address, '0a:58:0a:f4:07:07');
  });

  await t.test('ensureVxlan: creates, keeps, fixes MTU, replaces on mismatch', async (t) => {
    const created = await nl.links.ensureVxlan({ name: 'flannel.1', id: 1, local: '192.0.2.1', dev: 'va' });
    t.equal(created.vxlan?.id, 1);
    const kept = await nl.links.ensureVxlan({ name: 'flannel.1', id: 1, local: '192.0.2.1', dev: 'va' });
    t.equal(kept.index, created.index, 'same device kept');
    const mtu = await nl.links.ensureVxlan({
      name: 'flannel.1',
      id: 1,
      local: '192.0.2.1',
      dev: 'va',
      mtu: 1200,
    });
    t.equal(mtu.index, created.index, 'MTU fixed in place');
    t.equal((await ipLinks('flannel.1'))[0]?.mtu, 1200);
    const replaced = await nl.links.ensureVxlan({ name: 'flannel.1', id: 2, local: '192.0.2.1', dev: 'va' });
    t.not(replaced.index, created.index, 'a different VNI means a new device');
    t.equal((await ipLinks('flannel.1'))[0]?.linkinfo?.info_data?.id, 2);
    await nl.links.createBridge({ name: 'notvx' });
    const fromBridge = await nl.links.ensureVxlan({ name: 'notvx', id: 3 });
    t.equal(fromBridge.kind, 'vxlan', 'a non-vxlan device of that name is replaced');
  });

  await t.test('delete takes a veth peer, and VXLAN devices bound to it, along', async (t) => {
    await nl.links.delete('va');
    t.equal(await nl.links.get('va'), undefined);
    t.equal(await nl.links.get('vb'), undefined);
    t.same(await ipLinks('vb'), []);
    // The kernel unregisters VXLAN devices whose underlay goes away (flannel.1 and vx7 used va).
    const names = (await nl.links.list()).map((l) => l.name).sort();
    t.same(names, ['lo', 'notvx']);
    t.same((await ipLinks()).map((l) => l.ifname).sort(), names, 'ip agrees');
  });
});
