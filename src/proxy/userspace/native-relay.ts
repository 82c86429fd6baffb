/**
 * The {@link Relay} over the native addon's TCP relay (src/native): the two sockets' fds are
 * handed to the addon's I/O thread, which splices between them, and Node lets go of its own
 * handles at once. The end of each connection comes back, in batches, with its byte counts.
 */
import type { Socket } from 'node:net';
import type { NativeAddon, NativeRelayEnd } from '../../native/index.js';
import type { Relay, RelayEnd, RelayStats } from './relay.js';

function fdOf(s: Socket): number | undefined {
  const fd = (s as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

function endOf(reason: NativeRelayEnd['reason']): RelayEnd {
  switch (reason) {
    case 'closed':
      return 'closed';
    case 'idle':
      return 'idle';
    case 'shutdown':
      return 'aborted';
    default:
      return 'reset';
  }
}

/** A Relay on the addon's splice relay. Throws when the addon cannot start its thread. */
export function createNativeRelay(addon: Pick<NativeAddon, 'Relay'>): Relay {
  const pending = new Map<number, (s: RelayStats) => void>();
  let nextId = 1;
  let closed = false;
  const native = new addon.Relay((events) => {
    for (const e of events) {
      const done = pending.get(e.id);
      if (!done) continue;
      pending.delete(e.id);
      done({ bytesFromClient: e.bytesAtoB, bytesFromUpstream: e.bytesBtoA, end: endOf(e.reason) });
    }
  });
  return {
    kind: 'native',
    pipeTcp(client, upstream, opts = {}) {
      const a = fdOf(client);
      const b = fdOf(upstream);
      if (closed || a === undefined || b === undefined || client.destroyed || upstream.destroyed) {
        client.destroy();
        upstream.destroy();
        return Promise.resolve({
          bytesFromClient: 0,
          bytesFromUpstream: 0,
          end: closed ? 'aborted' : 'reset',
        });
      }
      // Node must not read what the addon is to move (the client is accepted paused).
      client.pause();
      upstream.pause();
      // Never wraps (2^53 ids), so an id never names a live connection again.
      const id = nextId++;
      const result = new Promise<RelayStats>((resolve) => pending.set(id, resolve));
      native.addTcp(id, a, b, opts.idleTimeoutMs ?? 0);
      // The addon duplicated both fds: closing Node's copies leaves the connections open.
      client.destroy();
      upstream.destroy();
      return result;
    },
    async close() {
      if (closed) return;
      closed = true;
      native.close();
      // The last batch (every connection ended with `shutdown`) arrives through the event loop;
      // give it a moment, then settle whatever did not report.
      for (let i = 0; i < 20 && pending.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
      for (const [id, done] of pending) {
        pending.delete(id);
        done({ bytesFromClient: 0, bytesFromUpstream: 0, end: 'aborted' });
      }
    },
  };
}
