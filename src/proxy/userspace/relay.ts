/**
 * The relay: what moves bytes between a client connection accepted by a userspace listener and
 * the connection the proxy opened to the chosen endpoint. The interface is deliberately small so
 * that the native addon (issue 5) replaces the Node stream relay with splice(2) between the two
 * sockets without touching the proxier (native-relay.ts; load-relay.ts chooses).
 */
import type { Socket } from 'node:net';

/** Why a relayed connection ended. */
export type RelayEnd =
  /** Both sides finished normally (each sent FIN, every byte delivered). */
  | 'closed'
  /** One side was reset or failed; the other was reset in turn. */
  | 'reset'
  /** Nothing moved in either direction for `idleTimeoutMs`; both sides were closed. */
  | 'idle'
  /** The relay itself was closed (proxier shutdown). */
  | 'aborted';

/** What one relayed connection moved, reported when both sockets are closed. */
export interface RelayStats {
  /** Bytes read from the client and written to the upstream. */
  bytesFromClient: number;
  /** Bytes read from the upstream and written to the client. */
  bytesFromUpstream: number;
  end: RelayEnd;
}

/** Options of {@link Relay.pipeTcp}. */
export interface PipeOptions {
  /**
   * Close both sides when no byte moved in either direction for this long. 0 or undefined: no
   * idle timeout.
   */
  idleTimeoutMs?: number;
}

/**
 * Moves bytes between two connected TCP sockets until both directions are finished.
 *
 * Contract, for every implementation:
 * - both sockets are handed over connected; the client may be paused (the listener accepts
 *   with `pauseOnConnect` so nothing is read before an endpoint is chosen); the relay owns both
 *   from then on and destroys them when it is done;
 * - half-close: a FIN from one side is passed on as a FIN to the other (`end()`), and the other
 *   direction keeps flowing until it finishes too (the sockets are created with
 *   `allowHalfOpen: true`);
 * - backpressure: a side is not read while the other's send buffer is full;
 * - a reset or error on one side resets the other (RST, not FIN, so the peer sees the failure);
 * - `idleTimeoutMs` closes both sides when nothing moved in either direction;
 * - the promise resolves (never rejects) once both sockets are closed, with byte counters.
 *
 * A native relay may take the file descriptors (`(socket as any)._handle.fd`) and splice between
 * them on its own thread; Node must then never read the sockets (they stay paused). The addon's
 * relay duplicates the fds, so Node's sockets are destroyed at once (see native-relay.ts).
 */
export interface Relay {
  readonly kind: 'native' | 'node';
  pipeTcp(client: Socket, upstream: Socket, opts?: PipeOptions): Promise<RelayStats>;
  /** Ends every connection still being relayed (their promises resolve with `aborted`). */
  close(): Promise<void>;
}

/** The relay built on Node streams: every byte is copied through the JS heap. */
export function createNodeRelay(): Relay {
  const active = new Set<() => void>();
  let closed = false;
  return {
    kind: 'node',
    pipeTcp(client, upstream, opts = {}) {
      if (closed) {
        client.destroy();
        upstream.destroy();
        return Promise.resolve({ bytesFromClient: 0, bytesFromUpstream: 0, end: 'aborted' });
      }
      return new Promise<RelayStats>((resolve) => {
        const stats: RelayStats = { bytesFromClient: 0, bytesFromUpstream: 0, end: 'closed' };
        let ended: RelayEnd | undefined;
        let open = 2;
        let timer: NodeJS.Timeout | undefined;
        const idle = opts.idleTimeoutMs ?? 0;

        const finish = (end: RelayEnd, reset: boolean) => {
          if (ended) return;
          ended = end;
          stats.end = end;
          for (const s of [client, upstream]) {
            if (s.destroyed) continue;
            if (reset) s.resetAndDestroy();
            else s.destroy();
          }
        };
        const abort = () => finish('aborted', true);
        if (client.destroyed || upstream.destroyed) {
          client.destroy();
          upstream.destroy();
          resolve({ ...stats, end: 'reset' });
          return;
        }
        active.add(abort);

        const touch = () => timer?.refresh();
        if (idle > 0) {
          timer = setTimeout(() => finish('idle', false), idle);
          timer.unref();
        }

        const wire = (from: Socket, to: Socket, count: (n: number) => void) => {
          let waiting = false;
          from.on('data', (chunk: Buffer) => {
            count(chunk.length);
            touch();
            if (!to.write(chunk) && !waiting) {
              waiting = true;
              from.pause();
              to.once('drain', () => {
                waiting = false;
                touch();
                from.resume();
              });
            }
          });
          // A FIN from one side becomes a FIN to the other once everything before it was sent.
          from.on('end', () => {
            touch();
            if (!to.destroyed) to.end();
          });
          from.on('error', () => finish('reset', true));
          from.on('close', (hadError) => {
            // Gone before the other side finished sending to it: what the other side still
            // sends can never be delivered, so it must see a reset rather than wait.
            if (hadError || !to.readableEnded) finish('reset', true);
            open -= 1;
            if (open === 0) {
              if (timer) clearTimeout(timer);
              active.delete(abort);
              resolve(stats);
            }
          });
        };
        wire(client, upstream, (n) => (stats.bytesFromClient += n));
        wire(upstream, client, (n) => (stats.bytesFromUpstream += n));
        // Both directions finished: each side got our FIN and sent its own. Release the sockets.
        const maybeDone = () => {
          if (
            client.writableFinished &&
            upstream.writableFinished &&
            client.readableEnded &&
            upstream.readableEnded
          )
            finish('closed', false);
        };
        for (const s of [client, upstream]) {
          s.on('finish', maybeDone);
          s.on('end', () => setImmediate(maybeDone));
        }
        client.resume();
        upstream.resume();
      });
    },
    async close() {
      closed = true;
      for (const abort of [...active]) abort();
    },
  };
}
