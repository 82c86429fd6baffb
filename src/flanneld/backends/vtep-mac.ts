/**
 * VTEP MAC addresses: the stable MAC of this node's vxlan device, and the `BackendData` that
 * publishes it (`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`, flannel's vxlanLeaseAttrs).
 */
import { createHash } from 'node:crypto';

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** `text` as a lower-case colon-separated unicast MAC, or undefined when it is not one. */
export function unicastMac(text: unknown): string | undefined {
  if (typeof text !== 'string') return undefined;
  const mac = text.toLowerCase();
  if (!MAC.test(mac) || mac === '00:00:00:00:00:00') return undefined;
  // The I/G bit: a multicast MAC cannot be a VTEP (and the kernel refuses it as an FDB target).
  if (parseInt(mac.slice(0, 2), 16) & 1) return undefined;
  return mac;
}

/**
 * A MAC derived from `seed` (the tunnel source IP and VNI): the same on every start of the
 * daemon and after a reboot, so remote nodes' FDB and neighbour entries stay right while the
 * lease is rewritten, and different per node because public IPs are. Locally administered
 * unicast, so it cannot clash with a vendor-assigned address.
 */
export function deriveVtepMac(seed: string): string {
  const b = createHash('sha256').update(`weft-vtep-mac\0${seed}`).digest().subarray(0, 6);
  b[0] = ((b[0] ?? 0) & 0xfc) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** vxlan BackendData as read from a lease. */
export interface VxlanLeaseData {
  /** Absent when the lease does not say (then it is not checked). */
  readonly vni?: number;
  readonly vtepMac: string;
}

/** The BackendData of a vxlan lease, written as flannel writes it. */
export function vxlanBackendData(vni: number, vtepMac: string): { VNI: number; VtepMAC: string } {
  return { VNI: vni, VtepMAC: vtepMac };
}

/**
 * Reads vxlan BackendData with Go's rules (keys case-insensitive, unknown keys ignored). Throws an
 * Error whose message says which field is wrong.
 */
export function parseVxlanBackendData(data: unknown): VxlanLeaseData {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new Error(`BackendData ${data === undefined ? 'is missing' : 'is not an object'}`);
  }
  let vni: unknown;
  let mac: unknown;
  for (const [k, v] of Object.entries(data)) {
    const folded = k.toLowerCase();
    if (folded === 'vni') vni = v;
    else if (folded === 'vtepmac') mac = v;
  }
  const vtepMac = unicastMac(mac);
  if (vtepMac === undefined) {
    throw new Error(
      `BackendData.VtepMAC ${mac === undefined ? 'is missing' : `${JSON.stringify(mac)} is not a unicast MAC address`}`,
    );
  }
  if (vni === undefined || vni === null) return { vtepMac };
  if (typeof vni !== 'number' || !Number.isInteger(vni) || vni < 0 || vni > 0xffffff) {
    throw new Error(`BackendData.VNI ${JSON.stringify(vni)} is not a VNI`);
  }
  return { vni, vtepMac };
}
