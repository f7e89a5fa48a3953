/**
 * Sending: seal an offer for the chosen recipients, wait for their answers, then stream the
 * payload chunk by chunk. At most `window` chunks are in flight beyond the slowest accepting
 * recipient's acknowledgement, so a slow receiver slows its sender instead of filling the relay.
 */
import { SftError, toSftError, type ErrorCode } from '../errors';
import { checkReceipt, newTransferId, sealOffer } from '../crypto/envelope';
import { DEFAULT_CHUNK_SIZE, plainChunkLength, sealChunk } from '../crypto/stream';
import { RESUMABLE_CODES, offerToWire, peerIdentity, type PeerInfo } from '../protocol';
import { ProgressMeter, type Progress } from '../format';
import type { RelayClient } from '../client';
import { PayloadReader, collectSources, type Sources } from './sources';

export interface SendOptions {
  readonly paths: readonly string[];
  readonly to: readonly PeerInfo[];
  readonly chunkSize?: number;
  readonly onProgress?: (progress: Progress) => void;
  /** Called once the offer is out, with the transfer id and what is being sent. */
  readonly onOffered?: (transferId: string, sources: Sources) => void;
  readonly signal?: AbortSignal;
  /** How long recipients have to answer (default 10 minutes). */
  readonly answerTimeoutMs?: number;
  /** How long the sender waits for an acknowledgement before giving up (default 2 minutes). */
  readonly stallTimeoutMs?: number;
}

export type RecipientOutcome =
  | { readonly peerId: string; readonly outcome: 'done' }
  | { readonly peerId: string; readonly outcome: 'declined' }
  | { readonly peerId: string; readonly outcome: 'failed'; readonly code: ErrorCode; readonly message: string };

export interface SendResult {
  readonly transferId: string;
  readonly recipients: readonly RecipientOutcome[];
  readonly plainBytes: number;
  readonly cipherBytes: number;
  readonly files: number;
  readonly durationMs: number;
}

type Leg = { state: 'offered' | 'accepted' | 'declined' | 'done' | 'failed'; acked: number; code?: ErrorCode; message?: string };

/** Thrown inside sendFiles when a connection drops mid-transfer; caught there to resume. */
const INTERRUPTED = new SftError('PEER_GONE', 'The connection dropped; resuming.');

export async function sendFiles(client: RelayClient, options: SendOptions): Promise<SendResult> {
  if (options.to.length === 0) throw new SftError('BAD_MESSAGE', 'Choose at least one recipient.');
  const started = performance.now();
  const sources = await collectSources(options.paths);
  const chunkSize = Math.min(options.chunkSize ?? DEFAULT_CHUNK_SIZE, client.relayLimits?.maxChunkSize ?? DEFAULT_CHUNK_SIZE);
  const window = client.relayLimits?.window ?? 8;
  const transferId = newTransferId();
  const { offer, keys, layout } = sealOffer({
    sender: client.identity,
    recipients: options.to.map(peerIdentity),
    transferId,
    createdAt: Date.now(),
    header: { v: 1, entries: sources.entries, chunkSize, plainBytes: sources.totalBytes },
  });

  const legs = new Map<string, Leg>(options.to.map((p) => [p.peerId, { state: 'offered', acked: 0 }]));
  const recipients = new Map(options.to.map((p) => [p.peerId, peerIdentity(p)]));
  // One recipient's transfer survives a dropped connection: both ends wait for the relay, the sender
  // offers again and continues from the last chunk the recipient verified. (With several
  // recipients the legs would drift apart; those transfers fail on a drop, as before.)
  const resumable = options.to.length === 1;
  let interrupted = false;
  const meter = new ProgressMeter(transferId, sources.totalBytes, options.onProgress);
  // Wakes the streaming loop whenever an answer, acknowledgement or outcome arrives.
  let wake: () => void = () => undefined;
  let fatal: SftError | undefined;
  const changed = () => wake();
  const live = () => [...legs.values()].filter((l) => l.state === 'offered' || l.state === 'accepted');
  const accepted = () => [...legs.values()].filter((l) => l.state === 'accepted');

  const unregister = client.register(transferId, {
    answer: (m) => {
      const leg = legs.get(m.from);
      if (leg?.state === 'offered') {
        leg.state = m.accept ? 'accepted' : 'declined';
        // On a resume, the recipient already holds this many verified chunks.
        if (m.accept && m.resumeFrom !== undefined) leg.acked = Math.min(m.resumeFrom, layout.chunkCount);
      }
      changed();
    },
    ack: (m) => {
      const leg = legs.get(m.from);
      if (leg && m.index + 1 > leg.acked) leg.acked = m.index + 1;
      const slowest = Math.min(...accepted().map((l) => l.acked), layout.chunkCount);
      meter.update(Math.min(slowest * chunkSize, sources.totalBytes));
      changed();
    },
    done: (m) => {
      const leg = legs.get(m.from);
      const recipient = recipients.get(m.from);
      if (leg?.state === 'accepted' && leg.acked === layout.chunkCount && recipient) {
        // Delivered only if the recipient itself says so: the relay cannot forge this signature.
        const facts = { transferId, senderPeerId: client.identity.peerId, chunkCount: layout.chunkCount, cipherBytes: layout.cipherBytes };
        if (checkReceipt(recipient, facts, Buffer.from(m.receipt, 'base64url'))) leg.state = 'done';
        else Object.assign(leg, { state: 'failed', code: 'BAD_SIGNATURE', message: 'The delivery receipt is not signed by the recipient.' });
      }
      changed();
    },
    cancel: (code, message, from) => {
      // A dropped connection on either side: the transfer is resumed, not failed (see below).
      if (RESUMABLE_CODES.includes(code) && resumable) {
        interrupted = true;
        return changed();
      }
      if (from && legs.has(from) && from !== client.identity.peerId) {
        const leg = legs.get(from)!;
        if (leg.state === 'offered' || leg.state === 'accepted') Object.assign(leg, { state: 'failed', code, message });
      } else {
        // The relay (or the transfer as a whole) ended it.
        fatal = new SftError(code, message);
      }
      changed();
    },
    disconnected: () => {
      if (resumable) interrupted = true;
      else fatal = new SftError('PEER_GONE', 'The connection to the relay dropped.');
      changed();
    },
  });

  const onAbort = () => {
    fatal = new SftError('CANCELLED', 'The transfer was cancelled.');
    client.cancel(transferId, 'CANCELLED', 'The sender cancelled.');
    changed();
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });

  /**
   * Waits until `ready()` holds, failing on a fatal outcome or after `timeoutMs`: of silence, or
   * in all when `total` is set.
   */
  const until = async (ready: () => boolean, timeoutMs: number, what: string, total = false) => {
    const deadline = Date.now() + timeoutMs;
    while (!ready()) {
      if (fatal) throw fatal;
      if (interrupted) throw INTERRUPTED;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new SftError('TIMEOUT', what)), total ? Math.max(0, deadline - Date.now()) : timeoutMs);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    if (fatal) throw fatal;
  };

  /** After a drop: wait to be joined again, then offer the same transfer again, within the grace. */
  const offerAgain = async () => {
    const graceMs = client.relayLimits?.resumeGraceMs ?? 60_000;
    const deadline = Date.now() + graceMs;
    for (;;) {
      interrupted = false;
      if (!(await client.whenConnected(Math.max(0, deadline - Date.now())))) break;
      for (const leg of live()) Object.assign(leg, { state: 'offered', acked: 0 });
      attempt += 1;
      payloadKey = keys.payloadKeyFor(attempt);
      try {
        await client.offer({ ...offerToWire(offer), resume: attempt });
        return;
      } catch (error) {
        // The recipient may not be back yet; anything else ends the transfer.
        const e = toSftError(error);
        if (e.code !== 'PEER_OFFLINE' && e.code !== 'PEER_GONE') throw e;
      }
      if (Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new SftError('EXPIRED', 'The connection did not come back in time to resume the transfer.');
  };

  const reader = new PayloadReader(sources.files);
  let offered = false;
  let chunksRead = 0;
  let attempt = 0;
  let payloadKey = keys.payloadKey;
  try {
    if (options.signal?.aborted) throw new SftError('CANCELLED', 'The transfer was cancelled.');
    const wire = offerToWire(offer);
    await client.offer(wire);
    offered = true;
    options.onOffered?.(transferId, sources);
    const stall = options.stallTimeoutMs ?? 120_000;
    for (;;) {
      try {
        // A total, not a silence: with several recipients each answer would otherwise restart it.
        await until(() => live().every((l) => l.state !== 'offered'), options.answerTimeoutMs ?? 600_000, 'The recipients did not answer in time.', true);
        const start = Math.min(layout.chunkCount, ...accepted().map((l) => l.acked));
        // The reader must be exactly at the first chunk to send: on a resume it may be ahead of
        // (or behind) what the recipient holds.
        if (start !== chunksRead) await reader.seek(start * chunkSize);
        chunksRead = start;
        for (let index = start; index < layout.chunkCount && accepted().length > 0; index++) {
          const plaintext = await reader.read(plainChunkLength(layout, index));
          chunksRead = index + 1;
          await until(() => accepted().length === 0 || index < Math.min(...accepted().map((l) => l.acked)) + window, stall, 'The recipients stopped acknowledging.');
          if (accepted().length === 0) break;
          if (interrupted) throw INTERRUPTED;
          // The last file is checked for changes before the final chunk leaves: once the receiver
          // has it, the transfer is complete there.
          if (index === layout.chunkCount - 1) await reader.end();
          client.sendChunk(transferId, index, sealChunk(payloadKey, layout, index, plaintext));
        }
        await until(() => live().length === 0, stall, 'The recipients did not confirm the transfer.');
        break;
      } catch (error) {
        if (error !== INTERRUPTED) throw error;
        await offerAgain();
      }
    }
  } catch (error) {
    const e = toSftError(error);
    // Always tell the relay once the offer is out (even after our own cancel, which may have
    // reached it before the offer did), so it never keeps a transfer nobody will finish.
    if (offered) client.cancel(transferId, e.code, e.message);
    for (const leg of live()) Object.assign(leg, { state: 'failed', code: e.code, message: e.message });
    // Before the offer is out there is no transfer to report on; after, each leg has an outcome.
    if (!offered) throw e;
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    unregister();
    await reader.close();
  }

  return {
    transferId,
    recipients: [...legs].map(([peerId, leg]): RecipientOutcome =>
      leg.state === 'done' ? { peerId, outcome: 'done' } : leg.state === 'declined' ? { peerId, outcome: 'declined' } : { peerId, outcome: 'failed', code: leg.code ?? 'INTERNAL', message: leg.message ?? 'The transfer failed.' },
    ),
    plainBytes: sources.totalBytes,
    cipherBytes: layout.cipherBytes,
    files: sources.files.length,
    durationMs: performance.now() - started,
  };
}
