/**
 * The payload: one STREAM (Hoang, Reyhanitabar, Rogaway, Vizár 2015), as in age. The plaintext of
 * all files, concatenated in header order, is cut into chunks of `chunkSize` bytes (the last may
 * be shorter, and is empty only when the whole payload is). Chunk i is sealed with AES-256-GCM
 * under the transfer's payload key and the nonce
 *
 *     nonce = uint88_be(i) ‖ final        (final = 0x01 on the last chunk, else 0x00)
 *
 * Guarantees: a chunk that is flipped, dropped, duplicated, reordered or moved to another transfer
 * fails authentication (the key is per transfer, the index is in the nonce), and truncation fails
 * because the chunk the receiver expects to be final was sealed with final = 0x00.
 */
import { NONCE_BYTES, TAG_BYTES, open, seal } from './primitives';
import { SftError } from '../errors';

export const MIN_CHUNK_SIZE = 64;
export const MAX_CHUNK_SIZE = 1024 * 1024;
export const DEFAULT_CHUNK_SIZE = 1024 * 1024;

export function chunkNonce(index: number, final: boolean): Buffer {
  if (!Number.isSafeInteger(index) || index < 0) throw new SftError('BAD_MESSAGE', 'A chunk index is out of range.');
  const nonce = Buffer.alloc(NONCE_BYTES);
  // An 88-bit counter; JavaScript's safe integers fill its low 53 bits.
  nonce.writeUIntBE(Math.floor(index / 2 ** 40), 0, 6);
  nonce.writeUIntBE(index % 2 ** 40, 6, 5);
  nonce[NONCE_BYTES - 1] = final ? 1 : 0;
  return nonce;
}

/** How a payload of `plainBytes` is cut into chunks; shared by sender, receiver and relay. */
export interface PayloadLayout {
  readonly chunkSize: number;
  readonly chunkCount: number;
  readonly plainBytes: number;
  readonly cipherBytes: number;
}

export function layoutFor(plainBytes: number, chunkSize: number): PayloadLayout {
  const chunkCount = Math.max(1, Math.ceil(plainBytes / chunkSize));
  return { chunkSize, chunkCount, plainBytes, cipherBytes: plainBytes + chunkCount * TAG_BYTES };
}

/** The inverse of layoutFor, for the relay, which sees only ciphertext sizes. Null if inconsistent. */
export function layoutFromCipher(cipherBytes: number, chunkSize: number, chunkCount: number): PayloadLayout | null {
  const plainBytes = cipherBytes - chunkCount * TAG_BYTES;
  if (plainBytes < 0) return null;
  const layout = layoutFor(plainBytes, chunkSize);
  return layout.chunkCount === chunkCount ? layout : null;
}

export function plainChunkLength(layout: PayloadLayout, index: number): number {
  if (index < layout.chunkCount - 1) return layout.chunkSize;
  return layout.plainBytes - (layout.chunkCount - 1) * layout.chunkSize;
}

export function sealChunk(key: Buffer, layout: PayloadLayout, index: number, plaintext: Buffer): Buffer {
  if (index >= layout.chunkCount || plaintext.length !== plainChunkLength(layout, index)) {
    throw new SftError('INTERNAL', 'A chunk does not match the payload layout.');
  }
  return seal(key, chunkNonce(index, index === layout.chunkCount - 1), plaintext);
}

/** Opens chunk `index`; the receiver supplies the index it expects, never one read from the wire. */
export function openChunk(key: Buffer, layout: PayloadLayout, index: number, sealed: Buffer): Buffer {
  if (index >= layout.chunkCount) throw new SftError('INTEGRITY', 'More data arrived than the sender declared.');
  if (sealed.length !== plainChunkLength(layout, index) + TAG_BYTES) {
    throw new SftError('INTEGRITY', `Chunk ${index} has the wrong length.`);
  }
  try {
    return open(key, chunkNonce(index, index === layout.chunkCount - 1), sealed);
  } catch (error) {
    throw new SftError('INTEGRITY', `Chunk ${index} failed authentication: it was altered, reordered, replayed or cut short.`, error);
  }
}
