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
   * Keep a journal of the transfer, so that `resumeSend` can continue it after this process is
   * killed and started again (journal.ts). Removed when the transfer ends.
   */
  readonly journal?: TransferJournal;
  /**
   * A recipient answered a re-offer (after a dropped connection or a restart): it already holds
   * `fromChunk` of `chunkCount` verified chunks, and its leg continues from there.
   */
  readonly onResumed?: (fromChunk: number, chunkCount: number, peerId: string) => void;
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

type Leg = {
  /** `interrupted`: cut off by a dropped connection, waiting to be offered again. */
  state: 'offered' | 'accepted' | 'interrupted' | 'declined' | 'done' | 'failed';
  acked: number;
  /** When an interrupted leg was cut off: the relay's grace period runs from then. */
  since?: number;
  code?: ErrorCode;
  message?: string;
};

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
  const journaled = options.journal !== undefined;
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

/**
 * Bytes a sender keeps in flight beyond the slowest recipient's acknowledgement (8 chunks of the
 * default 1 MiB): enough to keep a loopback or LAN path busy, little enough that each process
 * holds only a few MiB for it.
 */
const IN_FLIGHT_BYTES = 8 * 1024 * 1024;

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
  // The relay caps chunks in flight; the sender also keeps at most IN_FLIGHT_BYTES in flight.
  const window = Math.min(client.relayLimits?.window ?? 8, Math.max(1, Math.floor(IN_FLIGHT_BYTES / chunkSize)));
  const journal = prepared.record ? options.journal : undefined;
  const record = prepared.record ? { ...prepared.record } : undefined;

  // Every leg of a transfer survives a dropped connection: the recipient's (that leg waits while
  // the others go on), the sender's or the relay's (every leg waits). Once no leg is running, the
  // sender offers the same transfer again to the legs that wait, and each continues from the last
  // chunk its recipient verified.
  const journaledLegs = new Map((prepared.record?.legs ?? []).map((l) => [l.peerId, l]));
  const legs = new Map<string, Leg>(
    to.map((p): [string, Leg] => {
      if (!resuming) return [p.peerId, { state: 'offered', acked: 0 }];
      // Taken up from a journal: the legs it records as live wait to be offered again.
      const j = prepared.record?.legs ? journaledLegs.get(p.peerId) : { state: 'live' as const };
      if (j?.state === 'live') return [p.peerId, { state: 'interrupted', acked: 0, since: prepared.record!.updatedAt }];
      if (j) return [p.peerId, { state: j.state, acked: 0, ...(j.code ? { code: j.code } : {}), ...(j.message ? { message: j.message } : {}) }];
      return [p.peerId, { state: 'failed', acked: 0, code: 'PEER_GONE', message: 'The journal does not list this recipient as running.' }];
    }),
  );
  const recipients = new Map(to.map((p) => [p.peerId, peerIdentity(p)]));
  const save = () => {
    if (!journal || !record) return Promise.resolve();
    record.legs = [...legs].flatMap(([peerId, leg]): NonNullable<OutgoingRecord['legs']> => {
      if (leg.state === 'done' || leg.state === 'declined') return [{ peerId, state: leg.state }];
      if (leg.state === 'failed') return [{ peerId, state: leg.state, ...(leg.code ? { code: leg.code } : {}), ...(leg.message ? { message: leg.message.slice(0, 500) } : {}) }];
      return [{ peerId, state: 'live' as const }];
    });
    return journal.save(record);
  };
  /** Records a leg's end at once, so that a restarted sender never offers it again. */
  const saveSoon = () => void save().catch(() => undefined);
  // Kept fresh while this process lives, so that a restarted one can tell how long ago it stopped
  // (the relay's grace period runs from then).
  const heartbeat = journal ? setInterval(saveSoon, JOURNAL_HEARTBEAT_MS) : undefined;
  heartbeat?.unref();

  /** Set when this sender's own connection (or the relay as a whole) dropped: every running leg is cut off. */
  let interrupted = false;
  const meter = new ProgressMeter(transferId, sources.totalBytes, options.onProgress);
  // Wakes the streaming loop whenever an answer, acknowledgement or outcome arrives.
  let wake: () => void = () => undefined;
  let fatal: SftError | undefined;
  const changed = () => wake();
  const live = () => [...legs.values()].filter((l) => l.state === 'offered' || l.state === 'accepted');
  const accepted = () => [...legs.values()].filter((l) => l.state === 'accepted');
  const waiting = () => [...legs].filter(([, l]) => l.state === 'interrupted');
  /**
   * A running leg cut off by a dropped connection waits to be offered again, answered or not (a
   * recipient asked but not yet answering is asked again: its Inbox knows the offer).
   */
  const cutOff = (leg: Leg) => {
    if (leg.state === 'offered' || leg.state === 'accepted') Object.assign(leg, { state: 'interrupted', since: Date.now() });
    // Others still running: this one can be offered again only once they end (see below).
    if (leg.state === 'interrupted' && live().length > 0) waitingForOthers.add(leg);
  };
  const waitingForOthers = new Set<Leg>();

  const unregister = client.register(transferId, {
    answer: (m) => {
      const leg = legs.get(m.from);
      if (leg?.state === 'offered') {
        leg.state = m.accept ? 'accepted' : 'declined';
        // On a resume, the recipient already holds this many verified chunks.
        if (m.accept && m.resumeFrom !== undefined) {
          leg.acked = Math.min(m.resumeFrom, layout.chunkCount);
          options.onResumed?.(leg.acked, layout.chunkCount, m.from);
        }
        saveSoon();
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
        saveSoon();
      }
      changed();
    },
    cancel: (code, message, from) => {
      const leg = from !== undefined && from !== client.identity.peerId ? legs.get(from) : undefined;
      // A dropped connection is resumed, not failed: a recipient's cuts off its own leg, the
      // sender's or the relay's every running leg (see below).
      if (RESUMABLE_CODES.includes(code)) {
        if (leg) cutOff(leg);
        else interrupted = true;
      } else if (leg) {
        // Also a leg waiting to be resumed: its recipient called it off while this sender was away
        // (the relay keeps that cancel for it), so it must not be offered again.
        if (leg.state === 'offered' || leg.state === 'accepted' || leg.state === 'interrupted') Object.assign(leg, { state: 'failed', code, message });
      } else {
        // The relay (or the transfer as a whole) ended it.
        fatal = new SftError(code, message);
      }
      saveSoon();
      changed();
    },
    disconnected: () => {
      interrupted = true;
      changed();
    },
  });

  /** Settles when the user cancels (once `fatal` is set): the waits to resume end at once. */
  let stopWaiting: () => void = () => undefined;
  const aborted = new Promise<void>((resolve) => (stopWaiting = resolve));
  const onAbort = () => {
    fatal = new SftError('CANCELLED', 'The transfer was cancelled.');
    client.cancel(transferId, 'CANCELLED', 'The sender cancelled.');
    stopWaiting();
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

  const graceMs = () => client.resumeGraceMs;
  /** An interrupted leg may be offered again until the relay's grace period after it was cut off… */
  const deadlineOf = (leg: Leg) => (leg.since ?? Date.now()) + graceMs();
  /** …less this margin, for the offer's journey and its answer. */
  const margin = () => Math.min(5_000, graceMs() / 4);
  const expire = (leg: Leg, message: string) => Object.assign(leg, { state: 'failed', code: 'EXPIRED', message });

  /**
   * Once no leg is running: wait to be joined again and for the waiting legs' recipients to be
   * listed online, then offer the same transfer again, under a new resume attempt, to those that
   * are (`resumeTo` names them unless they are every recipient). Waiting for one that stays away
   * stops at the first waiting leg's deadline, so the others are not lost with it; it is then
   * given up (EXPIRED) if it is not back, or else offered again in a later round.
   */
  const offerAgain = async () => {
    for (;;) {
      // The user's cancel (or another end of the whole transfer) stops the waiting too.
      if (fatal) throw fatal;
      interrupted = false;
      const legsWaiting = waiting();
      if (legsWaiting.length === 0) return;
      const soonest = Math.min(...legsWaiting.map(([, l]) => deadlineOf(l))) - margin();
      const connected = await Promise.race([client.whenConnected(Math.max(0, soonest - Date.now())), aborted.then(() => false)]);
      if (fatal) throw fatal;
      if (!connected) {
        // Not back in time (or closed for good): the legs whose time is up are given up.
        const closed = Date.now() < soonest;
        for (const [, leg] of legsWaiting) if (closed || Date.now() >= deadlineOf(leg) - margin()) expire(leg, 'The connection did not come back in time to resume the transfer.');
        continue;
      }
      // A recipient whose process died comes back as a new connection: wait for its presence
      // rather than burn offers (and resume attempts) while it is away.
      const online = await Promise.race([
        Promise.all(legsWaiting.map(([id]) => client.whenPeerOnline(id, Math.max(0, soonest - Date.now())))),
        aborted.then(() => [] as boolean[]),
      ]);
      if (fatal) throw fatal;
      if (client.state !== 'connected') continue;
      // A leg may have ended during those waits (its recipient called it off): it is not offered.
      // One whose recipient is away is given up once too little time is left for an offer to
      // arrive; one whose recipient is back, once its deadline has passed: the relay would refuse
      // it (EXPIRED), and a relay that restarted meanwhile cannot, so without this a sender whose
      // offers keep being refused would go on offering it for ever.
      legsWaiting.forEach(([, leg], i) => {
        if (leg.state === 'interrupted' && Date.now() >= deadlineOf(leg) - (online[i] ? 0 : margin())) {
          expire(leg, 'The recipient did not come back in time to resume the transfer.');
        }
      });
      const targets = legsWaiting.filter(([, leg], i) => online[i] && leg.state === 'interrupted');
      if (targets.length === 0) continue;
      for (const [, leg] of targets) Object.assign(leg, { state: 'offered', acked: 0 });
      attempt += 1;
      payloadKey = keys.payloadKeyFor(attempt);
      if (record) {
        // Recorded before any chunk can be sealed under this attempt's key, so that a restarted
        // sender never seals under it again.
        record.attempt = attempt;
        await save();
      }
      const resumeTo = targets.length === legs.size ? {} : { resumeTo: targets.map(([id]) => id) };
      try {
        // A drop and a reconnection during the awaits above are behind us: the offer goes out on
        // the connection there is now, and only a drop from here on interrupts it.
        interrupted = false;
        await client.offer({ ...offerToWire(offer), resume: attempt, ...resumeTo }).catch((error: unknown) => {
          // Unanswered on a live connection: the relay may have taken it, and offering again would
          // be refused as a duplicate. The legs wait for their answers as after any offer.
          if (toSftError(error).code !== 'TIMEOUT' || client.state !== 'connected') throw error;
        });
        // Legs left waiting for a later round have their grace counted from the end of this one,
        // at the relay too (it carries them into this round as interrupted).
        for (const [, leg] of waiting()) waitingForOthers.add(leg);
        return;
      } catch (error) {
        // Cancelled meanwhile: that is the outcome, not whatever the relay said to the re-offer.
        if (fatal) throw fatal;
        const e = toSftError(error);
        if (e.code === 'PEER_OFFLINE' || e.code === 'PEER_GONE' || e.code === 'TIMEOUT') {
          // A recipient, or this sender, may not be back after all: wait again.
          for (const [, leg] of targets) if (leg.state === 'offered') leg.state = 'interrupted';
          interrupted = false;
          await new Promise((r) => setTimeout(r, 250));
        } else {
          // Refused (EXPIRED, or a leg the relay does not know as interrupted): these legs end here.
          for (const [, leg] of targets) if (leg.state === 'offered') Object.assign(leg, { state: 'failed', code: e.code, message: e.message });
        }
      }
    }
  };

  const reader = new PayloadReader(sources.files);
  let offered = false;
  /** The first offer went out and got no answer: the relay may hold it all the same. */
  let unanswered = false;
  let announced = false;
  const announce = () => {
    if (!announced) options.onOffered?.(transferId, sources);
    announced = true;
  };
  let chunksRead = 0;
  let attempt = record?.attempt ?? 0;
  let payloadKey = keys.payloadKeyFor(attempt);
  try {
    if (options.signal?.aborted) throw new SftError('CANCELLED', 'The transfer was cancelled.');
    if (!resuming) {
      await save();
      interrupted = false; // As for a re-offer: only a drop after it goes out interrupts it.
      await client.offer(offerToWire(offer)).catch((error: unknown) => {
        // Unanswered on a live connection, the relay may hold it: it is called off below.
        if (toSftError(error).code === 'TIMEOUT') unanswered = true;
        throw error;
      });
      announce();
    }
    // On a resume the offer went out from the process that was killed; the grace runs from its
    // last sign of life.
    offered = true;
    const stall = options.stallTimeoutMs ?? 120_000;
    for (;;) {
      if (live().length === 0) {
        if (waiting().length === 0) break;
        // A leg cut off while others went on could not be offered again until now: its grace (at
        // the relay too) runs from the end of this stream, not from when it was cut off.
        for (const leg of waitingForOthers) leg.since = Date.now();
        waitingForOthers.clear();
        await offerAgain();
        announce();
        continue;
      }
      try {
        // A total, not a silence: with several recipients each answer would otherwise restart it.
        await until(() => live().every((l) => l.state !== 'offered'), options.answerTimeoutMs ?? 600_000, 'The recipients did not answer in time.', true);
        if (resuming && accepted().length > 0) await checkSourcesUnchanged(sources.files);
        // On a resume each leg continues where its recipient stands; the relay forwards each chunk
        // only to the legs that do not hold it yet, so the stream starts at the slowest.
        const start = Math.min(layout.chunkCount, ...accepted().map((l) => l.acked));
        // The reader must be exactly at the first chunk to send: on a resume it may be ahead of
        // (or behind) what the recipients hold.
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
          if (index === layout.chunkCount - 1) {
            await reader.end();
            if (interrupted) throw INTERRUPTED; // Dropped during that check: resumed, not failed.
          }
          client.sendChunk(transferId, index, sealChunk(payloadKey, layout, index, plaintext));
        }
        await until(() => live().length === 0, stall, 'The recipients did not confirm the transfer.');
      } catch (error) {
        if (error !== INTERRUPTED) throw error;
        for (const leg of live()) cutOff(leg);
      }
    }
  } catch (error) {
    // The user's cancel is the outcome, whatever it interrupted (a re-offer the relay then refuses).
    const e = options.signal?.aborted ? new SftError('CANCELLED', 'The transfer was cancelled.') : toSftError(error);
    // Always tell the relay once the offer is out (even after our own cancel, which may have
    // reached it before the offer did), so it never keeps a transfer nobody will finish.
    if (offered || unanswered) client.cancel(transferId, e.code, e.message);
    for (const leg of [...live(), ...waiting().map(([, l]) => l)]) Object.assign(leg, { state: 'failed', code: e.code, message: e.message });
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
