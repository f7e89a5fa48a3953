/**
 * Receiving: check an offer end to end, show it to the user, and, if they accept, write the
 * payload into the folder they chose. Every file is written to a temporary name beside its target
 * and renamed into place only after the final chunk has verified; on any failure every temporary
 * file is removed, so nothing partial is ever presented under a final name.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import path from 'node:path';
import { SftError, toSftError, type ErrorCode } from '../errors';
import { openOffer, signReceipt, type HeaderEntry, type OpenedOffer } from '../crypto/envelope';
import { openChunk } from '../crypto/stream';
import { checkReceivedPath, checkReceivedPaths, collisionKey, numberedName, resolveInside, temporaryNameFor } from '../names';
import { RESUMABLE_CODES, offerFromWire, type OfferMessage, type PeerInfo } from '../protocol';
import { ProgressMeter, type Progress } from '../format';
import type { RelayClient } from '../client';
import type { TrustVerdict } from '../trust';
import { TransferJournal, isPlacedInside, type IncomingRecord } from './journal';

/** What to do when a file of the same name already exists. */
export type ConflictPolicy = 'rename' | 'overwrite' | 'fail';

export interface AcceptOptions {
  /** The folder the user chose; nothing is ever written outside it (unless saveAs names a file). */
  readonly directory: string;
  /** For a single-file offer: the exact file the user chose in a save dialog. */
  readonly saveAs?: string;
  /** Maps a received path to another relative path under `directory` (checked like a received name). */
  readonly rename?: (receivedPath: string) => string | undefined;
  /** Default 'rename': "report (1).pdf", as browsers do. */
  readonly onConflict?: ConflictPolicy;
  readonly onProgress?: (progress: Progress) => void;
  readonly signal?: AbortSignal;
  /** Silence after which the transfer is abandoned (default 2 minutes). */
  readonly stallTimeoutMs?: number;
  /**
   * Wait for the first chunk (default 11 minutes): with several recipients the sender starts only
   * when all have answered, which may take as long as its answer timeout (10 minutes).
   */
  readonly firstChunkTimeoutMs?: number;
  /**
   * Whether the Inbox's journal records this transfer (default true). False for a transfer into a
   * staging folder the caller copies on from (a virtual file system): a restart would continue it
   * into that folder, and nothing would copy it on.
   */
  readonly journal?: boolean;
}

export interface ReceivedFile {
  readonly receivedPath: string;
  readonly savedAs: string;
  readonly size: number;
}

export interface ReceiveResult {
  readonly transferId: string;
  readonly files: readonly ReceivedFile[];
  readonly plainBytes: number;
  readonly durationMs: number;
}

export interface IncomingOffer {
  readonly transferId: string;
  /** The sender as the relay lists it; the name is whatever the sender chose and is untrusted. */
  readonly sender: PeerInfo;
  /** verified, seen before, new, or changed: a name the user verified now arrives with another key. */
  readonly senderTrust: TrustVerdict;
  readonly entries: readonly HeaderEntry[];
  readonly fileCount: number;
  readonly totalBytes: number;
  readonly recipientCount: number;
  accept(options: AcceptOptions): Promise<ReceiveResult>;
  decline(): void;
}

export interface OfferRefusal {
  readonly transferId: string;
  readonly from: string;
  readonly error: SftError;
}

/**
 * A transfer accepted by an earlier process (which was killed), continuing from its journal now
 * that the sender offered it again: the user is not asked a second time.
 */
export interface ResumedTransfer {
  readonly transferId: string;
  readonly sender: PeerInfo;
  readonly entries: readonly HeaderEntry[];
  readonly fileCount: number;
  readonly totalBytes: number;
  /** Chunks already verified and on disk, of `chunkCount`: where the transfer continues. */
  readonly fromChunk: number;
  readonly chunkCount: number;
  /** The folder chosen when the offer was accepted. */
  readonly directory: string;
  /** Set it to follow the progress. */
  onProgress?: (progress: Progress) => void;
  /** Settles like `IncomingOffer.accept()`. */
  readonly result: Promise<ReceiveResult>;
  cancel(): void;
}

/** A journaled transfer whose sender did not come back within the grace period: its partial files are removed. */
export interface ExpiredTransfer {
  readonly transferId: string;
  readonly from: string;
  /** The names the files would have been saved under. */
  readonly files: readonly string[];
  readonly error: SftError;
}

interface InboxEvents {
  offer: [IncomingOffer];
  /** A transfer accepted before this process started continues from its journal. */
  resumed: [ResumedTransfer];
  /** A journaled transfer that can no longer be resumed (expired, or called off) was cleaned up. */
  expired: [ExpiredTransfer];
  /** An offer that failed an end-to-end check; the sender is told with the same code. */
  refused: [OfferRefusal];
  /** An offer not yet answered was withdrawn (the sender cancelled or left): take its prompt down. */
  withdrawn: [OfferRefusal];
}

export interface InboxOptions {
  /** How far the user trusts this peer (trust.ts); without it every sender counts as new. */
  readonly trustOf?: (peerId: string, name: string) => TrustVerdict;
  /** How far an offer's timestamp may be from this clock (default 10 minutes). */
  readonly maxClockSkewMs?: number;
  /**
   * Journal accepted transfers here, so that a new Inbox (after this process is
   * killed and started again) continues them when their sender offers them again (journal.ts).
   * With a journal, call `restore()` once listeners are attached and the client is connected:
   * offers that arrive before it has read the journal wait for it.
   */
  readonly journal?: TransferJournal;
}

/** Listens for offers on a client and turns the valid ones into IncomingOffers. */
export class Inbox extends EventEmitter<InboxEvents> {
  /** Transfer ids already seen, with when, so a replayed offer is refused (within the skew window). */
  private readonly seen = new Map<string, number>();
  /** Transfers interrupted by a dropped connection, waiting for their sender to offer them again. */
  private readonly suspended = new Map<string, Suspension>();
  /** Recently completed transfers, so a late resume offer learns they are done (bounded). */
  private readonly completed = new Map<string, { signature: string; chunkCount: number; receipt: Buffer }>();
  /** Transfers journaled by an earlier process, waiting for their sender to offer them again. */
  private readonly journaled = new Map<string, { record: IncomingRecord; timer: NodeJS.Timeout }>();
  /**
   * Offers taken down unanswered by a dropped connection (either end's), with their signature and
   * when: the sender offers the same transfer again once both are back, and it is asked again.
   */
  private readonly unanswered = new Map<string, { signature: string; at: number }>();
  /** Set while offers must wait for the journal to be read. */
  private restoring: Promise<void> | undefined;
  private releaseOffers: () => void = () => undefined;
  private restored: Promise<void> | undefined;
  private readonly onOffer = (message: OfferMessage) => this.handle(message);

  constructor(
    private readonly client: RelayClient,
    private readonly options: InboxOptions = {},
  ) {
    super();
    client.on('offer', this.onOffer);
    if (options.journal) this.restoring = new Promise((resolve) => (this.releaseOffers = resolve));
  }

  /**
   * Reads the journal (InboxOptions.journal) of transfers this identity was receiving when an
   * earlier process stopped. Those past the relay's grace period (and a little for the journey, as
   * for a suspended transfer) are discarded with their partial files (`expired` events); the others
   * wait for their sender until that moment, and continue (`resumed`) when it offers them again.
   * Rejects if the journal cannot be read; offers are then handled as if it were empty.
   */
  restore(): Promise<void> {
    this.restored ??= (async () => {
      try {
        if (this.options.journal) await this.load(this.options.journal);
      } catch (error) {
        throw new SftError('IO', `The transfer journal could not be read: ${toSftError(error).message}`, error);
      } finally {
        this.restoring = undefined;
        this.releaseOffers();
      }
    })();
    return this.restored;
  }

  dispose(): void {
    this.client.off('offer', this.onOffer);
    for (const { timer } of this.journaled.values()) clearTimeout(timer);
    this.journaled.clear();
  }

  private async load(journal: TransferJournal): Promise<void> {
    if (!this.client.relayLimits) await this.client.whenConnected(15_000);
    const graceMs = this.client.resumeGraceMs + 2_000;
    for (const record of (await journal.list()).records) {
      if (record.kind !== 'receive' || TransferJournal.isHeldElsewhere(record)) continue;
      const left = record.updatedAt + graceMs - Date.now();
      if (left <= 0) {
        await this.expireJournaled(journal, record);
        continue;
      }
      const timer = setTimeout(() => void this.expireJournaled(journal, record), left);
      this.journaled.set(record.transferId, { record, timer });
      // The sender may call it off instead of offering it again (the relay passes that on when
      // this client joins): it ends now, not when the grace runs out. Replaced on a resume.
      this.client.register(record.transferId, {
        cancel: (code, message) => {
          if (RESUMABLE_CODES.includes(code) || !this.journaled.has(record.transferId)) return;
          clearTimeout(timer);
          void this.expireJournaled(journal, record, new SftError(code, message));
        },
      });
    }
  }

  private async expireJournaled(journal: TransferJournal, record: IncomingRecord, why?: SftError): Promise<void> {
    this.journaled.delete(record.transferId);
    await journal.discard(record).catch(() => undefined);
    this.emit('expired', {
      transferId: record.transferId,
      from: record.offer.sender.peerId,
      files: record.files.map((f) => f.finalPath),
      error: why ?? new SftError('EXPIRED', 'The sender did not come back in time to resume the transfer; its partial files were removed.'),
    });
  }

  private handle(message: OfferMessage): void {
    // Offers that arrive while the journal is read wait for it: one may continue a journaled transfer.
    if (this.restoring) {
      void this.restoring.then(() => this.handle(message));
      return;
    }
    // The same signed offer again, after this process was restarted: continue from the journal.
    const journaled = this.journaled.get(message.transferId);
    if (journaled && message.resume && message.signature === journaled.record.offer.signature) {
      clearTimeout(journaled.timer);
      this.journaled.delete(message.transferId);
      return this.resumeJournaled(journaled.record, message.resume);
    }
    // The same signed offer again, after a dropped connection: continue the suspended transfer.
    const suspended = this.suspended.get(message.transferId);
    if (suspended && message.resume && message.signature === suspended.signature) return suspended.resume(message.resume);
    // Taken down unanswered when a connection dropped: the same signed offer is asked again.
    const unanswered = this.unanswered.get(message.transferId);
    if (unanswered && message.resume && message.signature === unanswered.signature) {
      this.unanswered.delete(message.transferId);
      return this.present(message, true);
    }
    // Finished here, but the sender missed the news (the connection dropped at the very end).
    const completed = this.completed.get(message.transferId);
    if (completed && message.resume && message.signature === completed.signature) {
      this.client
        .answer(message.transferId, true, completed.chunkCount)
        .then(() => this.client.done(message.transferId, completed.receipt))
        .catch(() => undefined);
      return;
    }
    this.present(message, false);
  }

  /** Checks an offer and shows it; `again`: one seen before, taken down unanswered by a drop. */
  private present(message: OfferMessage, again: boolean): void {
    const from = message.sender.peerId;
    try {
      const opened = this.check(message, again);
      this.emit('offer', this.incoming(message, opened));
    } catch (error) {
      const e = toSftError(error);
      // A replay carries the id of a genuine transfer, which may be running: cancelling it would
      // let a replay kill the real thing. Every other refusal is reported to the sender.
      if (e.code !== 'REPLAYED_OFFER') this.client.cancel(message.transferId, e.code, e.message);
      this.emit('refused', { transferId: message.transferId, from, error: e });
    }
  }

  private check(message: OfferMessage, again = false): OpenedOffer {
    const skew = this.options.maxClockSkewMs ?? 600_000;
    const now = Date.now();
    for (const [id, at] of this.seen) if (now - at > 2 * skew) this.seen.delete(id);
    for (const [id, u] of this.unanswered) if (now - u.at > 2 * skew) this.unanswered.delete(id);
    if (Math.abs(now - message.createdAt) > skew) throw new SftError('REPLAYED_OFFER', 'The offer is too old (or a clock is far off).');
    if (!again && this.seen.has(message.transferId)) throw new SftError('REPLAYED_OFFER', 'This offer was already received once.');
    const opened = openOffer(offerFromWire(message), this.client.identity);
    // Remembered only once authentic, so a forged offer cannot burn a genuine transfer id.
    this.seen.set(message.transferId, now);
    checkReceivedPaths(opened.header.entries.map((e) => e.path));
    return opened;
  }

  private incoming(message: OfferMessage, opened: OpenedOffer): IncomingOffer {
    const client = this.client;
    const from = message.sender.peerId;
    let answered = false;
    let withdrawn: SftError | undefined;
    // Until it is answered, the offer listens for its own end, so a prompt never outlives it.
    const withdraw = (error: SftError) => {
      if (answered || withdrawn) return;
      withdrawn = error;
      stopListening();
      // Ended by a dropped connection, not by a person: the sender will offer it again.
      if (RESUMABLE_CODES.includes(error.code)) this.unanswered.set(message.transferId, { signature: message.signature, at: Date.now() });
      this.emit('withdrawn', { transferId: message.transferId, from, error });
    };
    const stopListening = client.register(message.transferId, {
      cancel: (code, text) => withdraw(new SftError(code, text)),
      disconnected: () => withdraw(new SftError('PEER_GONE', 'The connection to the relay dropped before you answered; the sender will offer it again.')),
    });
    const answerOnce = () => {
      if (withdrawn) throw withdrawn;
      if (answered) throw new SftError('BAD_MESSAGE', 'This offer was already answered.');
      answered = true;
      stopListening();
    };
    const sender = client.peers.get(from) ?? { ...message.sender, name: 'unknown peer' };
    return {
      transferId: message.transferId,
      sender,
      senderTrust: this.options.trustOf?.(from, sender.name) ?? 'new',
      entries: opened.header.entries,
      fileCount: opened.header.entries.filter((e) => e.type === 'file').length,
      totalBytes: opened.header.plainBytes,
      recipientCount: message.stanzas.length,
      accept: (options) => {
        try {
          answerOnce();
        } catch (error) {
          return Promise.reject(error);
        }
        const { resume: _resume, resumeTo: _resumeTo, ...offer } = message;
        return this.receiveAccepted(offer, opened, options, message.resume ?? 0);
      },
      decline: () => {
        if (withdrawn) return; // Nothing to decline any more.
        answerOnce();
        client.answer(message.transferId, false).catch(() => undefined); // Nothing is written either way.
      },
    };
  }

  /**
   * Runs a receive once accepted: by the user now, or (`restored`) before this process started, and
   * continued from its journal. Either way the same signed offer resumes it after a dropped
   * connection, and once complete it is remembered, so a sender that missed the news learns it.
   */
  private receiveAccepted(
    offer: IncomingRecord['offer'],
    opened: OpenedOffer,
    options: AcceptOptions,
    firstAttempt: number,
    restored?: IncomingRecord,
  ): Promise<ReceiveResult> {
    const { transferId, signature } = offer;
    const { chunkCount, cipherBytes } = opened.layout;
    const receipt = signReceipt(this.client.identity, { transferId, senderPeerId: offer.sender.peerId, chunkCount, cipherBytes });
    const journal = this.options.journal && options.journal !== false ? { journal: this.options.journal, offer, restored } : undefined;
    return receive(this.client, transferId, opened, options, receipt, { signature, suspended: this.suspended, sender: offer.sender.peerId }, firstAttempt, journal).then((result) => {
      this.rememberCompleted(transferId, signature, chunkCount, receipt);
      return result;
    });
  }

  private rememberCompleted(transferId: string, signature: string, chunkCount: number, receipt: Buffer): void {
    this.completed.set(transferId, { signature, chunkCount, receipt });
    if (this.completed.size > 1000) this.completed.delete(this.completed.keys().next().value!);
  }

  /**
   * Continues a transfer accepted before this process started. The journaled offer is opened again
   * with this identity (checking its signature and unwrapping the file key: the journal holds no
   * secret), the partial files are cut back to the last recorded verified chunk, and the answer
   * tells the sender to continue from there, under the key of its resume attempt.
   */
  private resumeJournaled(record: IncomingRecord, attempt: number): void {
    const client = this.client;
    const journal = this.options.journal!;
    const { transferId } = record;
    let opened: OpenedOffer;
    try {
      opened = openOffer(offerFromWire(record.offer), client.identity);
      checkReceivedPaths(opened.header.entries.map((e) => e.path));
    } catch (error) {
      const e = toSftError(error);
      void journal.discard(record);
      client.cancel(transferId, e.code, e.message);
      this.emit('refused', { transferId, from: record.offer.sender.peerId, error: e });
      return;
    }
    this.seen.set(transferId, Date.now());
    const from = record.offer.sender.peerId;
    const controller = new AbortController();
    const { accept } = record;
    const options: AcceptOptions = {
      directory: accept.directory,
      ...(accept.saveAs !== undefined ? { saveAs: accept.saveAs } : {}),
      onConflict: accept.onConflict,
      onProgress: (p) => resumed.onProgress?.(p),
      signal: controller.signal,
    };
    const resumed: ResumedTransfer = {
      transferId,
      sender: client.peers.get(from) ?? { ...record.offer.sender, name: 'unknown peer' },
      entries: opened.header.entries,
      fileCount: opened.header.entries.filter((e) => e.type === 'file').length,
      totalBytes: opened.header.plainBytes,
      fromChunk: Math.min(record.verified, opened.layout.chunkCount),
      chunkCount: opened.layout.chunkCount,
      directory: accept.directory,
      result: this.receiveAccepted(record.offer, opened, options, attempt, record),
      cancel: () => controller.abort(),
    };
    resumed.result.catch(() => undefined); // Reported to whoever awaits it; never an unhandled rejection.
    this.emit('resumed', resumed);
  }
}

/** Where a receive keeps its journal; `restored` when it continues one written by an earlier process. */
interface ReceiveJournal {
  readonly journal: TransferJournal;
  readonly offer: IncomingRecord['offer'];
  readonly restored?: IncomingRecord;
}

/**
 * The longest a suspended receive waits, in grace periods, while its sender stays online (the
 * relay's EXPIRED notice normally ends the wait much sooner; this bounds it if that is lost).
 */
const MAX_WAIT_GRACES = 30;

/** Bytes between two journal checkpoints (8 chunks of the default 1 MiB), or a second, whichever comes first. */
const CHECKPOINT_BYTES = 8 * 1024 * 1024;
const CHECKPOINT_MS = 1000;

interface PlannedFile {
  readonly receivedPath: string;
  readonly size: number;
  readonly mode: number | undefined;
  readonly mtimeMs: number | undefined;
  finalPath: string;
  readonly tempPath: string;
  /** Whether this transfer created the temporary file (only then does an abort remove it). */
  created?: boolean;
}

interface Suspension {
  readonly signature: string;
  /** Continues with the sender's resume attempt, whose key seals the chunks that follow. */
  resume(attempt: number): void;
}

async function receive(
  client: RelayClient,
  transferId: string,
  opened: OpenedOffer,
  options: AcceptOptions,
  /** Signed now, sent only after the last chunk verified and every file is in place. */
  receipt: Buffer,
  resumable?: { signature: string; suspended: Map<string, Suspension>; sender: string },
  /** An offer that is itself a resume uses that attempt's key from its first chunk. */
  firstAttempt = 0,
  /** With a journal, a transfer records its progress in it. */
  journaled?: ReceiveJournal,
): Promise<ReceiveResult> {
  const started = performance.now();
  const { layout, keys, header } = opened;
  const output = new PayloadOutput(transferId, options.onConflict ?? 'rename');
  const meter = new ProgressMeter(transferId, header.plainBytes, options.onProgress);
  // Continuing a journal: the chunks it records as verified are on disk, synced.
  const resumeFrom = journaled?.restored ? Math.min(journaled.restored.verified, layout.chunkCount) : 0;
  let checkpointed = { chunks: resumeFrom, at: Date.now() };
  /** Syncs the data written so far, then records how many chunks it holds. */
  const checkpoint = async (verified: number) => {
    if (!journaled) return;
    await output.sync();
    await journaled.journal.save({
      v: 1,
      kind: 'receive',
      transferId,
      updatedAt: 0,
      offer: journaled.offer,
      accept: { directory: path.resolve(options.directory), ...(options.saveAs !== undefined ? { saveAs: path.resolve(options.saveAs) } : {}), onConflict: options.onConflict ?? 'rename' },
      files: output.planned(),
      createdDirs: output.dirs(),
      verified,
    });
    checkpointed = { chunks: verified, at: Date.now() };
  };
  /**
   * Checkpoints run one at a time, each after the last. The regular ones run in the background,
   * so the data path never waits on an fsync (it only claims chunks written before it began).
   * Every ending waits for the one under way, so no journal is written after it was removed.
   */
  let checkpoints = Promise.resolve();
  let checkpointing = false;
  const queueCheckpoint = (verified: number, onError: (error: SftError) => void) => {
    checkpointing = true;
    checkpoints = checkpoints
      .then(() => checkpoint(verified))
      .catch((error: unknown) => onError(toSftError(error)))
      .finally(() => {
        checkpointing = false;
      });
    return checkpoints;
  };
  const forget = () => (journaled ? journaled.journal.remove('receive', transferId).catch(() => undefined) : Promise.resolve());
  try {
    if (journaled?.restored) await output.restore(journaled.restored, Math.min(resumeFrom * layout.chunkSize, header.plainBytes), header.entries);
    else await output.prepare(header.entries, options);
    await checkpoint(resumeFrom);
  } catch (error) {
    const e = toSftError(error);
    await output.abort();
    await forget();
    client.cancel(transferId, e.code, e.message);
    throw e;
  }

  return new Promise<ReceiveResult>((resolve, reject) => {
    let expected = resumeFrom;
    let payloadKey = keys.payloadKeyFor(firstAttempt);
    let attemptInUse = firstAttempt;
    let finished = false;
    let queue = Promise.resolve();
    let stallTimer: NodeJS.Timeout | undefined;
    const stallMs = options.stallTimeoutMs ?? 120_000;

    const fail = (error: SftError, tellRelay: boolean) => {
      if (finished) return;
      finished = true;
      cleanup();
      if (tellRelay) client.cancel(transferId, error.code, error.message);
      // Cleaned up after any write already under way, so nothing is created after the clean-up.
      const cleanUp = () => checkpoints.then(() => output.abort());
      queue = queue.then(cleanUp, cleanUp).then(forget).finally(() => reject(error));
    };
    const armStall = (ms = stallMs) => {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(() => fail(new SftError('TIMEOUT', 'The sender stopped sending.'), true), ms);
    };
    const onAbort = () => fail(new SftError('CANCELLED', 'You cancelled the transfer.'), true);
    const cleanup = () => {
      clearTimeout(stallTimer);
      clearTimeout(graceTimer);
      resumable?.suspended.delete(transferId);
      unregister();
      options.signal?.removeEventListener('abort', onAbort);
    };

    const handleChunk = async (index: number, data: Buffer) => {
      if (finished) return;
      // The receiver decrypts with the index it expects, never one read from the wire, so a
      // reordered or replayed chunk fails authentication even if its label were rewritten.
      if (index !== expected) throw new SftError('INTEGRITY', `Chunk ${index} arrived where chunk ${expected} was expected.`);
      const plaintext = openChunk(payloadKey, layout, expected, data);
      await output.write(plaintext);
      expected += 1;
      client.ack(transferId, index);
      meter.update(Math.min(expected * layout.chunkSize, header.plainBytes));
      const due = (expected - checkpointed.chunks) * layout.chunkSize >= CHECKPOINT_BYTES || Date.now() - checkpointed.at >= CHECKPOINT_MS;
      if (expected < layout.chunkCount && due && !checkpointing) void queueCheckpoint(expected, (e) => fail(e, true));
      if (expected === layout.chunkCount) {
        // Every chunk verified: from here the outcome is decided here, and a late cancel or
        // timeout cannot interrupt the renames halfway.
        finished = true;
        cleanup();
        let files: ReceivedFile[];
        try {
          await checkpoints;
          files = await output.commit();
        } catch (error) {
          const e = toSftError(error);
          await output.abort();
          await forget();
          client.cancel(transferId, e.code, e.message);
          return reject(e);
        }
        await forget();
        client.done(transferId, receipt).catch(() => undefined); // The files are in place; the sender may just miss the news.
        resolve({ transferId, files, plainBytes: header.plainBytes, durationMs: performance.now() - started });
      }
    };

    /**
     * A dropped connection (ours, the sender's or the relay's) suspends the transfer: the partial
     * files stay, and when the sender offers the same transfer again within the relay's grace
     * period, the answer tells it how many chunks are already verified and written.
     */
    let graceTimer: NodeJS.Timeout | undefined;
    const suspend = (why: SftError) => {
      if (finished) return;
      if (!resumable) return fail(why, false);
      if (resumable.suspended.has(transferId)) return;
      clearTimeout(stallTimer);
      // Should this process die while it waits, a new one continues from here.
      queue = queue.then(() => (finished ? undefined : queueCheckpoint(expected, () => undefined)));
      const graceMs = client.resumeGraceMs + 2_000; // The relay's grace, and a little for the journey.
      const longest = Date.now() + MAX_WAIT_GRACES * graceMs;
      const expireUnlessSenderOnline = () => {
        // A sender still online may be serving other recipients first: it offers this transfer
        // again once they are done, and the relay says EXPIRED if it does not in time. Otherwise
        // (the sender away, this client away, or far too long) the wait ends here.
        if (client.state === 'connected' && client.peers.has(resumable.sender) && Date.now() < longest) {
          graceTimer = setTimeout(expireUnlessSenderOnline, graceMs);
          return;
        }
        fail(new SftError('EXPIRED', 'The sender did not come back in time to resume the transfer.'), false);
      };
      graceTimer = setTimeout(expireUnlessSenderOnline, graceMs);
      resumable.suspended.set(transferId, {
        signature: resumable.signature,
        resume: (attempt) => {
          // Each resume is a new attempt under a new key: an older one offered again (replayed by a
          // relay) is ignored, and the transfer goes on waiting for the sender.
          if (attempt <= attemptInUse) return;
          attemptInUse = attempt;
          clearTimeout(graceTimer);
          resumable.suspended.delete(transferId);
          // Chunks already queued are written first, so the resume point is exact.
          queue = queue.then(() => {
            if (finished) return;
            payloadKey = keys.payloadKeyFor(attempt);
            armStall(options.firstChunkTimeoutMs ?? 660_000);
            return client.answer(transferId, true, expected);
          }).catch((error: unknown) => fail(toSftError(error), false));
        },
      });
    };

    const unregister = client.register(transferId, {
      chunk: (index, data) => {
        armStall();
        queue = queue.then(() => handleChunk(index, data)).catch((error: unknown) => fail(toSftError(error), true));
      },
      cancel: (code: ErrorCode, message: string) => (RESUMABLE_CODES.includes(code) ? suspend(new SftError(code, message)) : fail(new SftError(code, message), false)),
      disconnected: () => suspend(new SftError('PEER_GONE', 'The connection to the relay dropped.')),
    });
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.signal?.aborted) return onAbort();
    armStall(options.firstChunkTimeoutMs ?? 660_000);
    client.answer(transferId, true, journaled?.restored ? expected : undefined).catch((error: unknown) => fail(toSftError(error), false));
  });
}

/** The files being written: planned names, temporary files, and the final renames. */
class PayloadOutput {
  private files: PlannedFile[] = [];
  private readonly createdDirs: string[] = [];
  private current = -1;
  private handle: fs.FileHandle | undefined;
  private written = 0;
  private aborted = false;

  constructor(
    private readonly transferId: string,
    private readonly policy: ConflictPolicy,
  ) {}

  async prepare(entries: readonly HeaderEntry[], options: AcceptOptions): Promise<void> {
    const root = path.resolve(options.directory);
    await fs.mkdir(root, { recursive: true });
    const rootReal = await fs.realpath(root);
    const fileEntries = entries.filter((e) => e.type === 'file');
    const singleSaveAs = options.saveAs !== undefined && fileEntries.length === 1 && entries.length === 1;
    if (options.saveAs !== undefined && !singleSaveAs) throw new SftError('BAD_MESSAGE', 'Save As needs an offer of exactly one file.');

    const targets = entries.map((entry) => {
      const renamed = options.rename?.(entry.path);
      return { entry, components: checkReceivedPath(renamed ?? entry.path) };
    });
    checkReceivedPaths(targets.map((t) => t.components.join('/')));

    for (const { entry, components } of targets) {
      if (entry.type === 'dir') {
        await this.makeDirs(rootReal, components);
        continue;
      }
      let finalPath: string;
      if (singleSaveAs) {
        finalPath = path.resolve(options.saveAs!);
      } else {
        await this.makeDirs(rootReal, components.slice(0, -1));
        finalPath = resolveInside(rootReal, components);
      }
      finalPath = await this.resolveConflict(finalPath);
      this.files.push({
        receivedPath: entry.path,
        size: entry.size,
        mode: entry.mode,
        mtimeMs: entry.mtimeMs,
        finalPath,
        tempPath: path.join(path.dirname(finalPath), temporaryNameFor(path.basename(finalPath), this.transferId)),
      });
    }
    await checkFreeSpace(rootReal, this.files.reduce((sum, f) => sum + f.size, 0));
  }

  /** Creates each folder one level at a time, refusing to pass through a link to elsewhere. */
  private async makeDirs(root: string, components: readonly string[]): Promise<void> {
    for (let depth = 1; depth <= components.length; depth++) {
      const dir = resolveInside(root, components.slice(0, depth));
      try {
        await fs.mkdir(dir);
        this.createdDirs.push(dir);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const stat = await fs.lstat(dir);
      if (!stat.isDirectory()) throw new SftError('UNSAFE_NAME', `${path.basename(dir)} exists in the destination and is not a folder.`);
    }
  }

  private async resolveConflict(finalPath: string): Promise<string> {
    const planned = this.isPlanned(finalPath);
    if ((!(await exists(finalPath)) && !planned) || (this.policy === 'overwrite' && !planned)) return finalPath;
    if (this.policy === 'fail') throw new SftError('FILE_EXISTS', `${path.basename(finalPath)} already exists.`);
    for (let n = 1; n < 10_000; n++) {
      const candidate = path.join(path.dirname(finalPath), numberedName(path.basename(finalPath), n));
      if (!(await exists(candidate)) && !this.isPlanned(candidate)) return candidate;
    }
    throw new SftError('FILE_EXISTS', `${path.basename(finalPath)} already exists.`);
  }

  /**
   * Whether another file of this transfer already has this name, compared as a case-insensitive
   * file system would (macOS, Windows): two planned names differing only in case would share a file there.
   */
  private isPlanned(finalPath: string): boolean {
    const dir = path.dirname(finalPath);
    const key = collisionKey(path.basename(finalPath));
    return this.files.some((f) => path.dirname(f.finalPath) === dir && collisionKey(path.basename(f.finalPath)) === key);
  }

  /** Appends plaintext, spilling across file boundaries in header order. */
  async write(data: Buffer): Promise<void> {
    let offset = 0;
    while (offset < data.length || this.needsAdvance()) {
      if (this.needsAdvance()) {
        await this.advance();
        continue;
      }
      const file = this.files[this.current]!;
      const n = Math.min(data.length - offset, file.size - this.written);
      if (n === 0) throw new SftError('INTEGRITY', 'More data arrived than the sender declared.');
      // At an explicit position: a file reopened after a restart is written where its verified data ends.
      const { bytesWritten } = await this.handle!.write(data, offset, n, this.written);
      offset += bytesWritten;
      this.written += bytesWritten;
    }
  }

  /** True when the current file is full (or none is open) and another remains. */
  private needsAdvance(): boolean {
    const file = this.files[this.current];
    return (!file || this.written === file.size) && this.current < this.files.length - 1;
  }

  private async advance(): Promise<void> {
    if (this.aborted) throw new SftError('CANCELLED', 'The transfer was stopped.');
    await this.closeCurrent();
    this.current += 1;
    this.written = 0;
    // 'wx': create exclusively, never through an existing file or link of the same name.
    this.handle = await fs.open(this.files[this.current]!.tempPath, 'wx', 0o600);
    this.files[this.current]!.created = true;
  }

  private async closeCurrent(): Promise<void> {
    if (!this.handle) return;
    const file = this.files[this.current]!;
    if (this.written !== file.size) throw new SftError('INTEGRITY', `${file.receivedPath} is shorter than declared.`);
    await this.handle.sync();
    await this.handle.close();
    this.handle = undefined;
  }

  /** After the last chunk: flush, then move every file into place. */
  async commit(): Promise<ReceivedFile[]> {
    while (this.needsAdvance()) await this.advance(); // Trailing empty files.
    await this.closeCurrent();
    if (this.current !== this.files.length - 1) throw new SftError('INTEGRITY', 'The payload ended before every file arrived.');
    const saved: ReceivedFile[] = [];
    /** Files moved into place under a name nobody had: a rollback removes them. */
    const added: string[] = [];
    try {
      for (const file of this.files) {
        await this.finish(file);
        const replacing = this.policy === 'overwrite' && (await exists(file.finalPath));
        file.finalPath = await this.moveIntoPlace(file);
        if (!replacing) added.push(file.finalPath);
        saved.push({ receivedPath: file.receivedPath, savedAs: file.finalPath, size: file.size });
      }
    } catch (error) {
      // All or nothing: take back the files already moved. Under 'overwrite', one that replaced a
      // file stays (the one it replaced is gone), but those that took a free name are removed.
      await Promise.all(added.map((f) => fs.rm(f, { force: true }).catch(() => undefined)));
      throw error;
    }
    return saved;
  }

  /**
   * Gives a complete temporary file its mode and time, through a handle opened without following
   * links and without blocking: if the file was swapped meanwhile (by someone who can write to the
   * folder) for a link, a pipe or another file, this fails and nothing elsewhere is touched, where
   * a change by path would follow the link.
   */
  private async finish(file: PlannedFile): Promise<void> {
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(file.tempPath, fsConstants.O_RDWR | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ELOOP' || code === 'EMLINK') throw new SftError('UNSAFE_NAME', `The partial copy of ${file.receivedPath} was replaced by a link.`, error);
      throw error;
    }
    try {
      const stat = await handle.stat();
      if (!stat.isFile() || stat.size !== file.size) throw new SftError('INTEGRITY', `The partial copy of ${file.receivedPath} was changed.`);
      // Only the executable bit travels; the receiver's umask decides the rest.
      await handle.chmod((file.mode !== undefined && file.mode & 0o111 ? 0o777 : 0o666) & ~process.umask());
      // The time is a courtesy: a file system that refuses it does not fail the transfer.
      if (file.mtimeMs !== undefined) await handle.utimes(new Date(), new Date(file.mtimeMs)).catch(() => undefined);
    } finally {
      await handle.close();
    }
  }

  /**
   * Renames without overwriting: a hard link fails if the name was taken meanwhile, where a rename
   * would silently replace it. File systems without hard links fall back to check-then-rename.
   */
  private async moveIntoPlace(file: PlannedFile): Promise<string> {
    if (this.policy === 'overwrite') {
      await fs.rename(file.tempPath, file.finalPath);
      return file.finalPath;
    }
    for (;;) {
      try {
        await fs.link(file.tempPath, file.finalPath);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'EEXIST') {
          file.finalPath = await this.resolveConflict(file.finalPath);
          continue;
        }
        if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EXDEV' && code !== 'ENOSYS') throw error;
        if (await exists(file.finalPath)) file.finalPath = await this.resolveConflict(file.finalPath);
        await fs.rename(file.tempPath, file.finalPath);
        return file.finalPath;
      }
      // In place. Only the temporary name is left to drop: should that fail (a virus scanner
      // holding the file on Windows), the received file stands and the extra name is left.
      await fs.unlink(file.tempPath).catch(() => undefined);
      return file.finalPath;
    }
  }

  /** The planned files, for the journal. */
  planned(): IncomingRecord['files'] {
    return this.files.map((f) => ({
      receivedPath: f.receivedPath,
      size: f.size,
      ...(f.mode !== undefined ? { mode: f.mode } : {}),
      ...(f.mtimeMs !== undefined ? { mtimeMs: f.mtimeMs } : {}),
      finalPath: f.finalPath,
      tempPath: f.tempPath,
    }));
  }

  dirs(): string[] {
    return [...this.createdDirs];
  }

  /** Makes what has been written to the open file durable (closed files were synced on closing). */
  async sync(): Promise<void> {
    await this.handle?.sync();
  }

  /**
   * Takes up the files of a journal at `offset` bytes into the payload: files before it must be
   * complete, the one holding it is cut back to it (data written after the last checkpoint was
   * never recorded as verified), and files after it, begun after that checkpoint, are removed.
   */
  async restore(record: IncomingRecord, offset: number, entries: readonly HeaderEntry[]): Promise<void> {
    await checkJournaledPlan(record, entries);
    this.files = record.files.map((f) => ({ receivedPath: f.receivedPath, size: f.size, mode: f.mode, mtimeMs: f.mtimeMs, finalPath: f.finalPath, tempPath: f.tempPath }));
    this.createdDirs.push(...record.createdDirs);
    let before = 0;
    let current = this.files.findIndex((f) => {
      if (before + f.size > offset) return true;
      before += f.size;
      return false;
    });
    if (current === -1) current = this.files.length; // Every byte is written (an empty payload).
    for (const [i, file] of this.files.entries()) {
      if (i <= current) file.created = true; // The journal's: this transfer made them.
      if (i < current) {
        const stat = await fs.lstat(file.tempPath).catch(() => undefined);
        if (!stat && file.size === 0) await (await fs.open(file.tempPath, 'wx', 0o600)).close();
        else if (!stat?.isFile() || stat.size !== file.size) throw new SftError('INTEGRITY', `The partial copy of ${file.receivedPath} is missing or was changed.`);
      } else if (i > current) {
        await fs.rm(file.tempPath, { force: true });
      }
    }
    if (current === this.files.length) {
      this.current = this.files.length - 1;
      this.written = this.files[this.current]?.size ?? 0;
      return;
    }
    // Never through a link, and never anything but a regular file: the same care as 'wx' on creation.
    const file = this.files[current]!;
    this.handle = await fs.open(file.tempPath, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_NOFOLLOW, 0o600);
    const stat = await this.handle.stat();
    if (!stat.isFile()) throw new SftError('UNSAFE_NAME', `The partial copy of ${file.receivedPath} is not a regular file.`);
    // Shorter than the synced data the journal counts: something else cut it; never pad it with zeros.
    if (stat.size < offset - before) throw new SftError('INTEGRITY', `The partial copy of ${file.receivedPath} is shorter than recorded.`);
    await this.handle.truncate(offset - before);
    this.current = current;
    this.written = offset - before;
  }

  /** Removes every temporary file and every folder this transfer created (if still empty). */
  async abort(): Promise<void> {
    this.aborted = true;
    await this.handle?.close().catch(() => undefined);
    this.handle = undefined;
    // Only the temporary files this transfer made: a name it planned may belong to another file.
    await Promise.all(this.files.filter((f) => f.created).map((f) => fs.rm(f.tempPath, { force: true }).catch(() => undefined)));
    for (const dir of [...this.createdDirs].reverse()) await fs.rmdir(dir).catch(() => undefined);
  }
}

/**
 * A journal is checked against what it claims to continue before it is trusted to write or
 * truncate anything: its files are the signed header's, in its order and sizes, and its paths stay
 * where the transfer put them (`isPlacedInside`).
 */
async function checkJournaledPlan(record: IncomingRecord, entries: readonly HeaderEntry[]): Promise<void> {
  const files = entries.filter((e) => e.type === 'file');
  const same = files.length === record.files.length && files.every((e, i) => e.path === record.files[i]!.receivedPath && e.size === record.files[i]!.size);
  if (!same || !(await isPlacedInside(record))) {
    throw new SftError('INTEGRITY', 'The journal of this transfer does not match its offer, or names a place outside the folder you chose.');
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.lstat(file);
    return true;
  } catch {
    return false;
  }
}

/** Refuses up front when the disk cannot hold the payload, where the platform can tell. */
async function checkFreeSpace(dir: string, bytes: number): Promise<void> {
  let free: number;
  try {
    const stats = await fs.statfs(dir);
    free = stats.bavail * stats.bsize;
  } catch {
    return;
  }
  if (free < bytes) throw new SftError('NO_SPACE', `Not enough free space: ${bytes} bytes needed, ${free} available.`);
}
