/**
 * The alloc backend: the node holds a subnet lease and nothing else; some other component does
 * the networking. No device, no entries, nothing owned, so the reconciler never touches the kernel.
 */
import type { Backend, BackendContext, PreparedBackend } from './backend.js';
import { emptyDesiredState, type DesiredState } from './desired-state.js';

/** Always empty: alloc programs nothing. */
export function planAlloc(): DesiredState {
  return emptyDesiredState();
}

/** The factory registered as `alloc`. flannel's alloc writes no BackendType and uses the interface MTU. */
export function createAllocBackend(ctx: BackendContext): Backend {
  return {
    type: 'alloc',
    prepare: (): Promise<PreparedBackend> => Promise.resolve({ mtu: ctx.extIface.mtu, devices: [] }),
    plan: planAlloc,
  };
}
