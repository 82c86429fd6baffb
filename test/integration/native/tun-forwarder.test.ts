/**
 * The udp backend's native forwarder in a throwaway namespace: malformed datagrams on the UDP
 * port are counted and dropped without harming the process, and a well-formed packet still goes
 * through to the TUN afterwards, but only from a lease's public IP with a source inside that
 * lease's subnet; a packet for a subnet no route covers is answered with ICMP.
 */
import { createSocket } from 'node:dgram';
import { runInNetns } from '../../helpers/netns-test.js';
import { run } from '../../lab/exec.js';
import { loadNative, type NativeTun, type NativeTunStats } from '../../../src/native/index.js';

function ipv4(src: number[], dst: number[], payload = 8, ttl = 64): Buffer {
  const b = Buffer.alloc(20 + 8 + payload);
  b[0] = 0x45;
  b.writeUInt16BE(b.length, 2);
  b[8] = ttl;
  b[9] = 1;
  b.set(src, 12);
  b.set(dst, 16);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += b.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  b.writeUInt16BE(~sum & 0xffff, 10);
  b[20] = 8;
  return b;
}

async function until(tun: NativeTun, what: (s: NativeTunStats) => boolean): Promise<NativeTunStats> {
  for (let i = 0; i < 100; i++) {
    const s = tun.stats();
    if (s && what(s)) return s;
    await new Promise((r) => setTimeout(r, 20));
  }
  return tun.stats() as NativeTunStats;
}

runInNetns(
  import.meta.url,
  async (t) => {
    const loaded = loadNative();
    if (!loaded.addon) throw new Error(`the native addon must be built: ${loaded.reason}`);
    await run('ip', ['link', 'set', 'lo', 'up']);
    // An underlay for the forwarder's datagrams to leave by (they go nowhere, which is fine).
    await run('ip', ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p']);
    await run('ip', ['link', 'set', 'eth0p', 'up']);
    await run('ip', ['addr', 'add', '10.99.0.11/24', 'dev', 'eth0']);
    // The remote node's public IP, local here so that the test can send from it.
    await run('ip', ['addr', 'add', '10.99.0.12/32', 'dev', 'eth0']);
    await run('ip', ['link', 'set', 'eth0', 'up']);
    const pushed: NativeTunStats[] = [];
    const tun = new loaded.addon.Tun(
      { name: 'flannel0', localIp: '10.99.0.11', port: 8285, icmpSource: '10.244.1.0' },
      (s) => pushed.push(s),
    );
    t.teardown(() => tun.close());
    t.equal(tun.name, 'flannel0');
    await run('ip', ['addr', 'add', '10.244.1.0/32', 'dev', 'flannel0']);
    await run('ip', ['link', 'set', 'flannel0', 'up', 'mtu', '1472']);
    await run('ip', ['route', 'add', '10.244.0.0/16', 'dev', 'flannel0']);
    await run('sysctl', ['-qw', 'net.ipv4.conf.flannel0.accept_local=1']);
    tun.setRoutes([['10.244.2.0', 24, '10.99.0.12']]);

    const sock = createSocket('udp4');
    await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
    const fromPeer = createSocket('udp4');
    await new Promise<void>((resolve) => fromPeer.bind(0, '10.99.0.12', resolve));
    const sendFrom = (s: typeof sock, b: Buffer) =>
      new Promise<void>((resolve, reject) =>
        s.send(b, 8285, '10.99.0.11', (e) => (e ? reject(e) : resolve())),
      );
    const send = (b: Buffer) => sendFrom(sock, b);
    const good = ipv4([10, 244, 2, 2], [10, 244, 1, 0]);
    const bad: [string, Buffer][] = [
      ['empty', Buffer.alloc(0)],
      ['truncated header', good.subarray(0, 12)],
      ['IPv6', Buffer.from([0x60, ...good.subarray(1)])],
      ['IHL 3', Buffer.from([0x43, ...good.subarray(1)])],
      [
        'total length past the datagram',
        Buffer.concat([good.subarray(0, 2), Buffer.from([0x05, 0xdc]), good.subarray(4)]),
      ],
      [
        'total length under the header',
        Buffer.concat([good.subarray(0, 2), Buffer.from([0x00, 0x08]), good.subarray(4)]),
      ],
    ];
    for (const [, b] of bad) await send(b);
    const afterBad = await until(tun, (s) => s.udpRx >= bad.length);
    t.equal(afterBad.udpRx, bad.length, 'every malformed datagram was received');
    t.equal(
      afterBad.dropMalformed,
      bad.length,
      `every malformed datagram was counted and dropped (${bad.map((b) => b[0]).join(', ')})`,
    );
    t.equal(afterBad.tunTx, 0, 'none reached the TUN');

    // Well-formed, but not from a lease's node, or not from its subnet: dropped and counted.
    await send(good);
    await sendFrom(fromPeer, ipv4([10, 244, 7, 7], [10, 244, 1, 0]));
    const afterStrangers = await until(tun, (s) => s.dropUnknownPeer >= 1 && s.dropForeignSource >= 1);
    t.equal(afterStrangers.dropUnknownPeer, 1, 'from no lease public IP: dropped as unknown peer');
    t.equal(afterStrangers.dropForeignSource, 1, "from a lease's node, foreign source: dropped");
    t.equal(afterStrangers.tunTx, 0, 'neither reached the TUN');

    await sendFrom(fromPeer, good);
    const afterGood = await until(tun, (s) => s.tunTx >= 1);
    t.equal(afterGood.tunTx, 1, "a packet from the lease's node and subnet is written to the TUN");

    // A packet for a subnet no route covers, from the kernel into the TUN: answered with ICMP.
    const ping = await run('ping', ['-n', '-c', '1', '-W', '1', '10.244.9.9'], { allowFail: true });
    t.match(ping.stdout, /Destination Net Unreachable/, 'no route: ICMP net-unreachable');
    const afterPing = await until(tun, (s) => s.icmpSent >= 1);
    t.equal(afterPing.dropNoRoute, 1, 'counted as no route');

    // A packet whose TTL runs out at this hop is not sent on.
    const before = (await until(tun, () => true)).udpTx;
    await run('ping', ['-n', '-c', '1', '-W', '1', '-t', '1', '10.244.2.2'], { allowFail: true });
    const afterTtl = await until(tun, (s) => s.dropTtl >= 1);
    t.equal(afterTtl.dropTtl, 1, 'TTL 1 is not forwarded');
    t.equal(afterTtl.udpTx, before, 'nothing sent for it');
    await run('ping', ['-n', '-c', '1', '-W', '1', '10.244.2.2'], { allowFail: true });
    t.equal(
      (await until(tun, (s) => s.udpTx > before)).udpTx,
      before + 1,
      'a routed packet is sent over UDP',
    );

    sock.close();
    fromPeer.close();
    tun.close();
    const links = await run('ip', ['-j', 'link', 'show']);
    t.notMatch(links.stdout, /flannel0/, 'close() removes the device');
    t.ok(pushed.length >= 1, 'statistics were pushed in batches through the thread-safe function');
  },
  { role: 'tun' },
);
