/** The backend compliance suite for every built-in backend and option set. */
import t from 'tap';
import { createBackend, type NodeLease, type Underlay } from '../../../../src/flanneld/backends/index.js';
import { Cidr, parseNetConfig, type LeaseAttrs } from '../../../../src/ipam/index.js';
import { silentLogger } from '../../../../src/log/index.js';
import type { Netlink } from '../../../../src/netlink/index.js';
import { runBackendCompliance } from './compliance.js';

const underlay: Underlay = { dev: 'eth0', connected: ['192.0.2.0/24'] };

function lease(key: string, attrs: Partial<LeaseAttrs> & { publicIP: string }): NodeLease {
  const [ip, len] = key.split('-');
  return { key, subnets: { ipv4: Cidr.from(ip ?? '', Number(len)) }, attrs };
}

const vx = (n: number, ip = `192.0.2.${n}`, mac = `0a:58:0a:f4:${n.toString(16).padStart(2, '0')}:00`) =>
  lease(`10.244.${n}.0-24`, { publicIP: ip, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: mac } });
const hg = (n: number, ip = `192.0.2.${n}`) =>
  lease(`10.244.${n}.0-24`, { publicIP: ip, backendType: 'host-gw' });

/** Not a real Netlink: planners never touch it, and compliance runs planners only. */
const netlink = {} as Netlink;
const extIface = { name: 'eth0', index: 2, ip: '192.0.2.1', mtu: 1500 };

function backendFor(config: ReturnType<typeof parseNetConfig>) {
  return createBackend({ config, extIface, netlink, logger: silentLogger() });
}

const vxlanBad = [
  lease('10.244.20.0-24', { publicIP: '192.0.2.20', backendType: 'host-gw' }),
  lease('10.244.21.0-24', { publicIP: '192.0.2.21', backendType: 'vxlan' }),
  lease('10.244.22.0-24', {
    publicIP: '192.0.2.22',
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: 'garbage' },
  }),
  lease('10.244.23.0-24', {
    publicIP: '192.0.2.23',
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: '01:00:5e:00:00:01' },
  }),
  lease('10.245.0.0-24', {
    publicIP: '192.0.2.24',
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:24' },
  }),
  lease('10.244.1.128-25', {
    publicIP: '192.0.2.25',
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:25' },
  }),
  lease('10.244.2.128-25', {
    publicIP: '192.0.2.26',
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:26' },
  }),
  lease('10.244.27.0-24', {
    publicIP: '0.0.0.0',
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:27' },
  }),
  lease('10.244.28.0-24', {
    publicIP: '192.0.2.1',
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:28' },
  }),
  lease('10.244.29.0-24', {
    publicIP: '192.0.2.29',
    backendType: 'vxlan',
    backendData: { VNI: 9, VtepMAC: '0a:00:00:00:00:29' },
  }),
  vx(30, '192.0.2.30', '0a:58:0a:f4:02:00'),
];

const vxlanConfig = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
runBackendCompliance(t, {
  name: 'vxlan',
  backend: backendFor(vxlanConfig),
  config: vxlanConfig,
  underlay,
  own: vx(1),
  remotes: [vx(2), vx(3), vx(4, '198.51.100.4')],
  bad: vxlanBad,
  programsRemotes: true,
});

const directConfig = parseNetConfig({
  Network: '10.244.0.0/16',
  Backend: { Type: 'vxlan', DirectRouting: true },
});
runBackendCompliance(t, {
  name: 'vxlan DirectRouting',
  backend: backendFor(directConfig),
  config: directConfig,
  underlay,
  own: vx(1),
  remotes: [vx(2), vx(3, '198.51.100.3'), vx(4, '198.51.100.4')],
  // A direct route needs no VtepMAC, so the bad ones are tunnelled remotes.
  bad: [
    ...vxlanBad
      .filter((l) => l.key !== '10.244.30.0-24')
      .map((l) =>
        l.attrs.publicIP.startsWith('192.0.2.') && l.attrs.publicIP !== '192.0.2.1'
          ? { ...l, attrs: { ...l.attrs, publicIP: l.attrs.publicIP.replace('192.0.2.', '198.51.100.') } }
          : l,
      ),
    // The MAC of remote 3, which is tunnelled (remote 2 is routed directly and needs no MAC).
    vx(30, '198.51.100.30', '0a:58:0a:f4:03:00'),
  ],
  programsRemotes: true,
});

const hostGwConfig = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } });
runBackendCompliance(t, {
  name: 'host-gw',
  backend: backendFor(hostGwConfig),
  config: hostGwConfig,
  underlay,
  own: hg(1),
  remotes: [hg(2), hg(3), hg(4)],
  bad: [
    vx(20),
    hg(21, '198.51.100.21'),
    lease('10.245.0.0-24', { publicIP: '192.0.2.22', backendType: 'host-gw' }),
    lease('10.244.23.0-24', { publicIP: 'fd00::23', backendType: 'host-gw' }),
    lease('10.244.24.0-24', { publicIP: '192.0.2.1', backendType: 'host-gw' }),
  ],
  programsRemotes: true,
});

const allocConfig = parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: 'alloc' } });
runBackendCompliance(t, {
  name: 'alloc',
  backend: backendFor(allocConfig),
  config: allocConfig,
  underlay,
  own: lease('10.244.1.0-24', { publicIP: '192.0.2.1' }),
  remotes: [2, 3, 4].map((n) => lease(`10.244.${n}.0-24`, { publicIP: `192.0.2.${n}` })),
  bad: [vx(20)],
  programsRemotes: false,
});
