/**
 * Sending: seal an offer for the chosen recipients, wait for their answers, then stream the
 * payload chunk by chunk. At most `window` chunks are in flight beyond the slowest accepting
 * recipient's acknowledgement, so a slow receiver slows its sender instead of filling the relay.
 */
import { SftError, toSftError, type ErrorCode } from '../errors';
import path from 'node:path';
import { checkReceipt, newTransferId, openSelfStanza, sealOffer, type SealedOffer, type TransferKeys } from '../crypto/envelope';
import { DEFAULT_CHUNK_SIZE, layoutFor, plainChunkLength, sealChunk, type PayloadLayout } from '../crypto/stream';
import { RESUMABLE_CODES, offerFromWire, offerToWire, peerIdentity, type PeerInfo } from '../protocol';
import { ProgressMeter, type Progress } from '../format';
import type { RelayClient } from '../client';
import { PayloadReader, checkSourcesUnchanged, collectSources, type Sources } from './sources';
import type { OutgoingRecord, TransferJournal } from './journal';

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
  /**
   * Keep a journal of a single-recipient transfer, so that `resumeSend` can continue it after this
   * process is killed and started again (journal.ts). Removed when the transfer ends.
   */
  readonly journal?: TransferJournal;
  /**
   * The recipient answered a re-offer (after a dropped connection or a restart): it already holds
   * `fromChunk` of `chunkCount` verified chunks, and sending continues from there.
   */
  readonly onResumed?: (fromChunk: number, chunkCount: number) => void;
}

/** Continuing a journaled transfer: the files, recipient and chunk size come from the journal. */
export type ResumeSendOptions = Omit<SendOptions, 'paths' | 'to' | 'chunkSize'> & {
  readonly journal: TransferJournal;
  readonly record: OutgoingRecord;
};

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

/** How often a sender's journal is rewritten while its process lives. */
const JOURNAL_HEARTBEAT_MS = 1000;

/** Thrown inside sendFiles when a connection drops mid-transfer; caught there to resume. */
const INTERRUPTED = new SftError('PEER_GONE', 'The connection dropped; resuming.');

/** A transfer ready to be offered: sealed now, or reopened from a journal. */
interface Prepared {
  readonly transferId: string;
  readonly sources: Sources;
  readonly offer: SealedOffer;
  readonly keys: TransferKeys;
  readonly layout: PayloadLayout;
  readonly to: readonly PeerInfo[];
  /** What the journal holds (and will be updated with), if this transfer keeps one. */
  readonly record?: OutgoingRecord;
}

export async function sendFiles(client: RelayClient, options: SendOptions): Promise<SendResult> {
  if (options.to.length === 0) throw new SftError('BAD_MESSAGE', 'Choose at least one recipient.');
  const started = performance.now();
  const sources = await collectSources(options.paths);
  const chunkSize = Math.min(options.chunkSize ?? DEFAULT_CHUNK_SIZE, client.relayLimits?.maxChunkSize ?? DEFAULT_CHUNK_SIZE);
  const transferId = newTransferId();
  // Only single-recipient transfers resume, so only they keep a journal.
  const journaled = options.journal !== undefined && options.to.length === 1;
  const { offer, keys, layout, selfStanza } = sealOffer({
    sender: client.identity,
    recipients: options.to.map(peerIdentity),
    transferId,
    createdAt: Date.now(),
    header: { v: 1, entries: sources.entries, chunkSize, plainBytes: sources.totalBytes },
    sealToSelf: journaled,
  });
  const record: OutgoingRecord | undefined = selfStanza && {
    v: 1,
    kind: 'send',
    transferId,
    updatedAt: Date.now(),
    offer: offerToWire(offer),
    self: { to: selfStanza.to, ephemeral: selfStanza.ephemeral.toString('base64url'), wrappedKey: selfStanza.wrappedKey.toString('base64url') },
    attempt: 0,
    paths: options.paths.map((p) => path.resolve(p)),
    recipients: [...options.to],
    entries: sources.entries,
    files: sources.files,
    acked: 0,
  };
  return run(client, { transferId, sources, offer, keys, layout, to: options.to, ...(record ? { record } : {}) }, options, started, false);
}

/**
 * Continues a transfer recorded by an earlier (killed) process: the same signed offer goes out
 * again with the next resume attempt, within the relay's grace period counted from the journal's
 * last update, and the recipient's answer says where to continue. Sources are checked against the
 * size and modification time recorded when the offer was sealed (`SOURCE_CHANGED` otherwise).
 */
export async function resumeSend(client: RelayClient, options: ResumeSendOptions): Promise<SendResult> {
  const started = performance.now();
  const { record } = options;
  let prepared: Prepared;
  try {
    const offer = offerFromWire(record.offer);
    if (offer.sender.peerId !== client.identity.peerId) throw new SftError('NOT_PARTICIPANT', 'This journaled transfer was sent by another identity.');
    const keys = openSelfStanza(client.identity, record.transferId, {
      to: record.self.to,
      ephemeral: Buffer.from(record.self.ephemeral, 'base64url'),
      wrappedKey: Buffer.from(record.self.wrappedKey, 'base64url'),
    });
    const totalBytes = record.files.reduce((sum, f) => sum + f.size, 0);
    const layout = layoutFor(totalBytes, offer.chunkSize);
    if (layout.chunkCount !== offer.chunkCount || layout.cipherBytes !== offer.cipherBytes) throw new SftError('INTEGRITY', 'The transfer journal disagrees with its offer.');
    const sources: Sources = { entries: record.entries, files: record.files, totalBytes, skipped: [] };
    prepared = { transferId: record.transferId, sources, offer, keys, layout, to: record.recipients, record };
  } catch (error) {
    // A journal this identity cannot take up never will be: drop it.
    await options.journal.remove('send', record.transferId).catch(() => undefined);
    throw toSftError(error);
  }
  return run(client, prepared, options, started, true);
}

async function run(
  client: RelayClient,
  prepared: Prepared,
  options: Omit<SendOptions, 'paths' | 'to' | 'chunkSize'>,
  started: number,
  /** Continuing a journaled transfer: the offer went out in an earlier process. */
  resuming: boolean,
): Promise<SendResult> {
  const { transferId, sources, offer, keys, layout, to } = prepared;
  const chunkSize = layout.chunkSize;
  const window = client.relayLimits?.window ?? 8;
  const journal = prepared.record ? options.journal : undefined;
  const record = prepared.record ? { ...prepared.record } : undefined;
  const save = () => (journal && record ? journal.save(record) : Promise.resolve());
  // Kept fresh while this process lives, so that a restarted one can tell how long ago it stopped
  // (the relay's grace period runs from then).
  const heartbeat = journal ? setInterval(() => save().catch(() => undefined), JOURNAL_HEARTBEAT_MS) : undefined;
  heartbeat?.unref();

  const legs = new Map<string, Leg>(to.map((p) => [p.peerId, { state: 'offered', acked: 0 }]));
  const recipients = new Map(to.map((p) => [p.peerId, peerIdentity(p)]));
  // One recipient's transfer survives a dropped connection: both ends wait for the relay, the sender
  // offers again and continues from the last chunk the recipient verified. (With several
  // recipients the legs would drift apart; those transfers fail on a drop, as before.)
  const resumable = to.length === 1;
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
        if (m.accept && m.resumeFrom !== undefined) {
          leg.acked = Math.min(m.resumeFrom, layout.chunkCount);
          options.onResumed?.(leg.acked, layout.chunkCount);
        }
      }
      changed();
    },
    ack: (m) => {
      const leg = legs.get(m.from);
      if (leg && m.index + 1 > leg.acked) leg.acked = m.index + 1;
      const slowest = Math.min(...accepted().map((l) => l.acked), layout.chunkCount);
      meter.update(Math.min(slowest * chunkSize, sources.totalBytes));
      if (record) record.acked = slowest;
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

  /**
   * After a drop: wait to be joined again and for the recipient to be listed online, then offer the
   * same transfer again, until `deadline` (the end of the relay's grace period).
   */
  const offerAgain = async (deadline: number) => {
    for (;;) {
      interrupted = false;
      if (!(await client.whenConnected(Math.max(0, deadline - Date.now())))) break;
      // A recipient whose process died comes back as a new connection: wait for its presence
      // rather than burn offers (and resume attempts) while it is away.
      if (resumable && !(await client.whenPeerOnline(to[0]!.peerId, deadline - Date.now()))) {
        if (Date.now() < deadline) continue;
        if (client.state === 'connected') throw new SftError('EXPIRED', 'The recipient did not come back in time to resume the transfer.');
        break;
      }
      for (const leg of live()) Object.assign(leg, { state: 'offered', acked: 0 });
      attempt += 1;
      payloadKey = keys.payloadKeyFor(attempt);
      if (record) {
        // Recorded before any chunk can be sealed under this attempt's key, so that a restarted
        // sender never seals under it again.
        record.attempt = attempt;
        await save();
      }
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
  let attempt = record?.attempt ?? 0;
  let payloadKey = keys.payloadKeyFor(attempt);
  const graceMs = () => client.relayLimits?.resumeGraceMs ?? 60_000;
  try {
    if (options.signal?.aborted) throw new SftError('CANCELLED', 'The transfer was cancelled.');
    if (resuming) {
      // The offer went out from the process that was killed; the grace runs from its last sign of life.
      offered = true;
      await offerAgain(record!.updatedAt + graceMs());
    } else {
      await save();
      await client.offer(offerToWire(offer));
      offered = true;
    }
    options.onOffered?.(transferId, sources);
    const stall = options.stallTimeoutMs ?? 120_000;
    for (;;) {
      try {
        // A total, not a silence: with several recipients each answer would otherwise restart it.
        await until(() => live().every((l) => l.state !== 'offered'), options.answerTimeoutMs ?? 600_000, 'The recipients did not answer in time.', true);
        if (resuming && accepted().length > 0) await checkSourcesUnchanged(sources.files);
        const start = Math.min(layout.chunkCount, ...accepted().map((l) => l.acked));
        // The reader must be exactly at the first chunk to send: on a resume it may be ahead of
        // (or behind) what the recipient holds.
        if (start !== chunksRead) await reader.seek(start * chunkSize);
        chunksRead = start;
        for (let index = start; index < layout.chunkCount && accepted().length > 0; index++) {
          const plaintext = await reader.read(plainChunkLength(layout, index));
          chunksRead = index + 1;
          await until(() => accepted().length === 0 || index < Math.min(...accepted().map((l) => l.acked)) + window, stall, `The recipients stopped acknowledging chunks (nothing for ${Math.round(stall / 100) / 10} s).`);
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
        await offerAgain(Date.now() + graceMs());
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
    // Ended, one way or another: nothing is left to resume.
    clearInterval(heartbeat);
    if (journal) await journal.remove('send', transferId).catch(() => undefined);
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
