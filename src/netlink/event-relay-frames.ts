/** The frame format between the netlink event relay (event-relay-child.ts) and its parent. */

/** Frame types; see event-relay-child.ts. */
export const FRAME = { DATA: 0, LOST: 1, READY: 2, FAILED: 3 } as const;

/** What the parent passes to the relay in argv[2]. */
export interface RelayConfig {
  /** rtnetlink multicast group numbers to join. */
  groups: number[];
  /** SO_RCVBUF to ask for. */
  recvBufferSize: number;
  /** Bytes the relay may hold for a parent that does not read before it drops and reports LOST. */
  maxPendingBytes: number;
}

/** One decoded frame. */
export interface Frame {
  type: number;
  payload: Buffer;
}

/** Encode one frame. */
export function encodeFrame(type: number, payload: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(payload.length + 1, 0);
  head.writeUInt8(type, 4);
  return Buffer.concat([head, payload]);
}

/** Largest frame accepted; a netlink datagram is far smaller, so anything bigger is corruption. */
const MAX_FRAME = 16 << 20;

/** Splits a byte stream into frames; keeps an incomplete tail for the next chunk. */
export class FrameReader {
  #buf: Buffer = Buffer.alloc(0);

  /** Feed bytes; returns the frames completed. Throws on a frame that cannot be valid. */
  push(chunk: Buffer): Frame[] {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const frames: Frame[] = [];
    while (this.#buf.length >= 5) {
      const len = this.#buf.readUInt32BE(0);
      if (len < 1 || len > MAX_FRAME) throw new Error(`netlink relay: bad frame length ${len}`);
      if (this.#buf.length < 4 + len) break;
      frames.push({ type: this.#buf.readUInt8(4), payload: this.#buf.subarray(5, 4 + len) });
      this.#buf = this.#buf.subarray(4 + len);
    }
    return frames;
  }
}
