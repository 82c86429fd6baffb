/**
 * Golden delegate configs: the exact JSON weft-cni hands to bridge (and saves for DEL), for the
 * subnet.env variants flanneld writes. Key order is part of the golden because the saved file
 * is this JSON. One deliberate difference from flannel: the cluster-network routes name their
 * gateway (see gatewayOf in delegate-config.ts).
 */
import t from 'tap';
import { buildDelegateConfig, parseNetConf, type JsonObject } from '../../../src/cni/index.js';
import { parseSubnetEnv } from '../../../src/flanneld/subnet-env.js';

const V4_NO_MASQ = `FLANNEL_NETWORK=10.244.0.0/16
FLANNEL_SUBNET=10.244.3.1/24
FLANNEL_MTU=1450
FLANNEL_IPMASQ=false
`;
const V4_MASQ = `FLANNEL_NETWORK=10.1.0.0/16
FLANNEL_SUBNET=10.1.17.1/24
FLANNEL_MTU=1472
FLANNEL_IPMASQ=true
`;
const DUAL = `FLANNEL_NETWORK=10.244.0.0/16
FLANNEL_SUBNET=10.244.3.1/24
FLANNEL_IPV6_NETWORK=fd00:10:244::/56
FLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64
FLANNEL_MTU=1430
FLANNEL_IPMASQ=true
`;

function build(subnetEnv: string, extra: JsonObject = {}): string {
  const conf = parseNetConf({ cniVersion: '1.0.0', name: 'weft', type: 'weft-cni', ...extra });
  return JSON.stringify(buildDelegateConfig(conf, parseSubnetEnv(subnetEnv)));
}

t.test('golden: IPv4, daemon does not masquerade, so the bridge does', async (t) => {
  t.equal(
    build(V4_NO_MASQ),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'weft',
      type: 'bridge',
      bridge: 'cni0',
      isGateway: true,
      isDefaultGateway: true,
      hairpinMode: true,
      ipMasq: true,
      mtu: 1450,
      ipam: {
        type: 'host-local',
        ranges: [[{ subnet: '10.244.3.0/24' }]],
        routes: [{ dst: '10.244.0.0/16', gw: '10.244.3.1' }],
      },
    }),
  );
});

t.test("golden: flannel README's example (daemon masquerades, MTU 1472)", async (t) => {
  t.equal(
    build(V4_MASQ, { name: 'mynet', cniVersion: '0.3.1' }),
    JSON.stringify({
      cniVersion: '0.3.1',
      name: 'mynet',
      type: 'bridge',
      bridge: 'cni0',
      isGateway: true,
      isDefaultGateway: true,
      hairpinMode: true,
      ipMasq: false,
      mtu: 1472,
      ipam: {
        type: 'host-local',
        ranges: [[{ subnet: '10.1.17.0/24' }]],
        routes: [{ dst: '10.1.0.0/16', gw: '10.1.17.1' }],
      },
    }),
  );
});

t.test('golden: dual stack gets one range set and one route per family', async (t) => {
  t.equal(
    build(DUAL),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'weft',
      type: 'bridge',
      bridge: 'cni0',
      isGateway: true,
      isDefaultGateway: true,
      hairpinMode: true,
      ipMasq: false,
      mtu: 1430,
      ipam: {
        type: 'host-local',
        ranges: [[{ subnet: '10.244.3.0/24' }], [{ subnet: 'fd00:10:244:3::/64' }]],
        routes: [
          { dst: '10.244.0.0/16', gw: '10.244.3.1' },
          { dst: 'fd00:10:244::/56', gw: 'fd00:10:244:3::1' },
        ],
      },
    }),
  );
});

t.test('golden: delegate fields win, except name, cniVersion and ipam', async (t) => {
  t.equal(
    build(V4_NO_MASQ, {
      delegate: {
        bridge: 'mynet0',
        mtu: 1400,
        ipMasq: false,
        isDefaultGateway: false,
        cniVersion: '0.3.0',
        vlan: 7,
      },
    }),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'weft',
      type: 'bridge',
      bridge: 'mynet0',
      isGateway: true,
      isDefaultGateway: false,
      hairpinMode: true,
      ipMasq: false,
      mtu: 1400,
      vlan: 7,
      ipam: {
        type: 'host-local',
        ranges: [[{ subnet: '10.244.3.0/24' }]],
        routes: [{ dst: '10.244.0.0/16', gw: '10.244.3.1' }],
      },
    }),
  );
});

t.test('golden: another delegate type gets no bridge-only defaults', async (t) => {
  t.equal(
    build(V4_MASQ, { delegate: { type: 'ipvlan', master: 'eth0' } }),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'weft',
      type: 'ipvlan',
      ipMasq: false,
      mtu: 1472,
      master: 'eth0',
      ipam: {
        type: 'host-local',
        ranges: [[{ subnet: '10.1.17.0/24' }]],
        routes: [{ dst: '10.1.0.0/16', gw: '10.1.17.1' }],
      },
    }),
  );
});

t.test('golden: ipam overrides pass through, but never a range outside the lease', async (t) => {
  t.equal(
    build(V4_NO_MASQ, {
      ipam: {
        dataDir: '/tmp/ipam',
        routes: [{ dst: '192.168.0.0/16', gw: '10.244.3.254' }],
        ranges: [[{ subnet: '172.16.0.0/24' }]],
        subnet: '172.16.1.0/24',
        rangeStart: '172.16.1.10',
        rangeEnd: '172.16.1.20',
        gateway: '172.16.1.1',
      },
      runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] },
    }),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'weft',
      type: 'bridge',
      bridge: 'cni0',
      isGateway: true,
      isDefaultGateway: true,
      hairpinMode: true,
      ipMasq: true,
      mtu: 1450,
      ipam: {
        type: 'host-local',
        dataDir: '/tmp/ipam',
        ranges: [[{ subnet: '10.244.3.0/24' }]],
        routes: [
          { dst: '192.168.0.0/16', gw: '10.244.3.254' },
          { dst: '10.244.0.0/16', gw: '10.244.3.1' },
        ],
      },
      runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] },
    }),
  );
});

t.test('the input config is not modified', async (t) => {
  const conf = parseNetConf({
    cniVersion: '1.0.0',
    name: 'weft',
    type: 'weft-cni',
    ipam: { routes: [{ dst: '192.168.0.0/16' }] },
  });
  const before = JSON.stringify(conf);
  buildDelegateConfig(conf, parseSubnetEnv(DUAL));
  buildDelegateConfig(conf, parseSubnetEnv(DUAL));
  t.equal(JSON.stringify(conf), before);
});
