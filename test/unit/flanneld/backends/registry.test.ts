/** The backend registry: built-ins by type, a plug-in backend without touching the dataplane. */
import t from 'tap';
import {
  createBackend,
  createUdpBackend,
  emptyDesiredState,
  registerBackend,
  registeredBackendTypes,
  unregisterBackend,
  type Backend,
  type BackendContext,
} from '../../../../src/flanneld/backends/index.js';
import { ErrorCodes } from '../../../../src/errors/index.js';
import { parseNetConfig } from '../../../../src/ipam/index.js';
import { silentLogger } from '../../../../src/log/index.js';
import type { Netlink } from '../../../../src/netlink/index.js';

const ctx = (type: string): BackendContext => ({
  config: parseNetConfig({ Network: '10.244.0.0/16', Backend: { Type: type } }),
  extIface: { name: 'eth0', index: 2, ip: '192.0.2.1', mtu: 1500 },
  netlink: {} as Netlink,
  logger: silentLogger(),
});

t.test('the built-ins are registered by type', async (t) => {
  t.same(registeredBackendTypes(), ['alloc', 'host-gw', 'udp', 'vxlan']);
  for (const type of ['vxlan', 'host-gw', 'alloc', 'udp']) t.equal(createBackend(ctx(type)).type, type);
});

t.test('an absent Backend means vxlan', async (t) => {
  const config = parseNetConfig({ Network: '10.244.0.0/16' });
  t.equal(createBackend({ ...ctx('vxlan'), config }).type, 'vxlan');
});

t.test('an unavailable backend is a config error that names it', async (t) => {
  unregisterBackend('udp');
  t.teardown(() => registerBackend('udp', createUdpBackend));
  t.throws(() => createBackend(ctx('udp')), {
    code: ErrorCodes.INVALID_CONFIG,
    message: /backend "udp" is not available in this build \(available: alloc, host-gw, vxlan\)/,
  });
});

t.test('a new backend plugs in by registering a factory', async (t) => {
  let seen: BackendContext | undefined;
  const udp: Backend = {
    type: 'udp',
    prepare: () => Promise.resolve({ mtu: 1472, devices: [{ name: 'flannel0', kind: 'tun', mtu: 1472 }] }),
    plan: () => emptyDesiredState(),
  };
  registerBackend('udp', (c) => {
    seen = c;
    return udp;
  });
  t.teardown(() => registerBackend('udp', createUdpBackend));
  const c = ctx('udp');
  t.equal(createBackend(c), udp);
  t.equal(seen, c, 'the factory gets the context');
  t.same(registeredBackendTypes(), ['alloc', 'host-gw', 'udp', 'vxlan']);
});
