/**
 * Choosing the relay: the addon's splice relay when native/ is built, else the Node streams one.
 */
import { messageOf } from '../../errors/index.js';
import type { Logger } from '../../log/index.js';
import { loadNative, type NativeLoad } from '../../native/index.js';
import { createNativeRelay } from './native-relay.js';
import { createNodeRelay, type Relay } from './relay.js';

/** Options of {@link loadRelay}. */
export interface LoadRelayOptions {
  /** Where the addon comes from. Default {@link loadNative} (honours WEFT_NATIVE=0). For tests. */
  native?: () => NativeLoad;
  /** Skip the addon and use the Node relay (without the fallback log line). */
  preferNode?: boolean;
}

/**
 * The native splice relay when the addon is built, else the Node stream relay, saying so in one
 * log line.
 */
export function loadRelay(log: Logger, opts: LoadRelayOptions = {}): Relay {
  if (opts.preferNode) return createNodeRelay();
  const loaded = (opts.native ?? loadNative)();
  if (!loaded.addon) {
    log.info({ reason: loaded.reason }, 'native relay not available; using the Node stream relay');
    return createNodeRelay();
  }
  try {
    if (typeof loaded.addon.Relay !== 'function') throw new Error('the addon has no Relay');
    const relay = createNativeRelay(loaded.addon);
    log.info({ addon: loaded.path }, 'using the native splice relay');
    return relay;
  } catch (err) {
    log.warn(
      { addon: loaded.path, err: messageOf(err) },
      'native relay failed to start; using the Node stream relay',
    );
    return createNodeRelay();
  }
}
