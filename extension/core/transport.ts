/**
 * The WebSocket transport the relay client uses: Engine.IO's own Node transport, with one change.
 * Frames that carry chunk ciphertext go out with an all-zero WebSocket mask; every other frame
 * keeps a random one.
 *
 * Why: a client must mask what it sends (RFC 6455 §5.3), so `ws` copies each outgoing message
 * into a new buffer, XORed with the mask, and the relay XORs it back. For a transfer that is an
 * extra 256 KiB allocation and copy per chunk at the sender and a pass over every byte at the
 * relay. `ws` skips both when the mask is zero (its documented `generateMask` option).
 *
 * This departs knowingly from RFC 6455 §5.3, which asks for an unpredictable mask key.
 * Why it is safe: masking exists so that a script in a browser cannot choose the bytes a proxy
 * sees on the wire (RFC 6455 §10.3). Binary frames from this client are only ever chunk payloads
 * (PROTOCOL.md: everything else is text), and those are AES-256-GCM ciphertext under a key only
 * the two ends hold: nobody who could aim them at a proxy chooses them. Control messages, whose
 * content comes partly from other people (names, ids), stay masked with fresh random bytes.
 */
import crypto from 'node:crypto';
import { NodeWebSocket } from 'engine.io-client';

type RawData = Parameters<NodeWebSocket['doWrite']>[1];

export class RelayTransport extends NodeWebSocket {
  /** Set only while `doWrite` hands a binary frame to `ws`, which asks for its mask synchronously. */
  private binaryFrame = false;

  override createSocket(uri: string, protocols: string | string[] | undefined, opts: Record<string, unknown>): unknown {
    const generateMask = (mask: Buffer) => {
      if (this.binaryFrame) mask.fill(0);
      else crypto.randomFillSync(mask);
    };
    return super.createSocket(uri, protocols, { ...opts, generateMask });
  }

  override doWrite(packet: Parameters<NodeWebSocket['doWrite']>[0], data: RawData): void {
    // If `ws` queues the frame instead of framing it now, it asks for the mask later, with this
    // flag cleared: that frame is then masked at random, which is always allowed.
    this.binaryFrame = typeof data !== 'string';
    try {
      super.doWrite(packet, data);
    } finally {
      this.binaryFrame = false;
    }
  }
}
