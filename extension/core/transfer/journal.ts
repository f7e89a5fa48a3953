/**
 * Transfer journals: what a transfer needs to survive its own process being
 * killed and started again, one small private JSON file per transfer (mode 0600, in a 0700
 * folder the caller owns: `<identity>/transfers/` for the command-line client, the extension's
 * global storage folder in VS Code).
 *
 * No journal holds a secret in clear:
 * - a receiving journal keeps the signed offer as it arrived; the restarted receiver opens it again
 *   with its own identity (`openOffer`), which checks the signature and unwraps the file key;
 * - a sending journal keeps the signed offer and the file key wrapped for the sender itself, with
 *   the very stanza construction used for recipients (`sealOffer({sealToSelf})`, `openSelfStanza`),
 *   so only the holder of the identity's agreement key can recover it.
 * Both also hold file names and paths, as the files themselves do on the same disk.
 *
 * A journal is removed when its transfer ends in any way; one left by a killed process is picked
 * up when the sender offers the transfer again, or discarded once it is older than the relay's
 * resume grace period (`discard`, which also removes a receiver's partial files).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { writePrivateJson } from '../private-file';
import { MAX_RECIPIENTS, OfferSchema, PeerInfoSchema } from '../protocol';
import { ErrorCodes } from '../errors';
import { TEMP_SUFFIX, isStrictlyInside, temporaryNameFor } from '../names';

const transferId = z.string().regex(/^[A-Za-z0-9_-]{22}$/);
const count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

/** The process that wrote a journal last: another live one is still running that transfer. */
const pid = z.number().int().positive().optional();

const OutgoingSchema = z.object({
  v: z.literal(1),
  kind: z.literal('send'),
  transferId,
  updatedAt: count,
  pid,
  /** The signed offer, exactly as first sent (without `resume`). */
  offer: OfferSchema.omit({ resume: true, resumeTo: true }),
  /** The file key wrapped for the sender itself (envelope.ts `openSelfStanza`). */
  self: z.object({ to: z.string(), ephemeral: z.string(), wrappedKey: z.string() }),
  /**
   * The highest resume attempt whose key may have sealed a chunk. It is recorded before an offer
   * with that attempt goes out, so a restarted sender always moves on to a key never used.
   */
  attempt: count,
  /** The paths the user chose, absolute, to recognise the same `send` run again. */
  paths: z.array(z.string()),
  recipients: z.array(PeerInfoSchema).min(1).max(MAX_RECIPIENTS),
  /**
   * Where each recipient's leg stood when last recorded: `live` (accepted, so it may be offered
   * again), or ended for good (never offered again). A recipient not listed had not accepted yet
   * and is not offered again. Absent (a journal of an older version): every recipient is `live`.
   */
  legs: z
    .array(
      z.object({
        peerId: z.string(),
        state: z.enum(['live', 'done', 'declined', 'failed']),
        code: z.enum(ErrorCodes).optional(),
        message: z.string().max(500).optional(),
      }),
    )
    .max(MAX_RECIPIENTS)
    .optional(),
  entries: z.array(z.object({ path: z.string(), type: z.enum(['file', 'dir']), size: count, mode: count.optional(), mtimeMs: count.optional() })),
  /** Each source file with the size and modification time it had when the offer was sealed. */
  files: z.array(z.object({ absolutePath: z.string(), size: count, mtimeMs: z.number() })),
  /** Chunks the slowest recipient had acknowledged when last recorded (for messages only). */
  acked: count,
});

const IncomingSchema = z.object({
  v: z.literal(1),
  kind: z.literal('receive'),
  transferId,
  updatedAt: count,
  pid,
  offer: OfferSchema.omit({ resume: true, resumeTo: true }),
  /** What the user chose when accepting, before the restart. */
  accept: z.object({ directory: z.string(), saveAs: z.string().optional(), onConflict: z.enum(['rename', 'overwrite', 'fail']) }),
  files: z.array(
    z.object({
      receivedPath: z.string(),
      size: count,
      mode: count.optional(),
      mtimeMs: count.optional(),
      finalPath: z.string(),
      tempPath: z.string().refine((p) => p.endsWith(TEMP_SUFFIX), 'not a temporary file name'),
    }),
  ),
  createdDirs: z.array(z.string()),
  /** Chunks verified and written, with the data synced to disk before this count was recorded. */
  verified: count,
});

export type OutgoingRecord = z.infer<typeof OutgoingSchema>;
export type IncomingRecord = z.infer<typeof IncomingSchema>;
export type JournalRecord = OutgoingRecord | IncomingRecord;

const RecordSchema = z.discriminatedUnion('kind', [OutgoingSchema, IncomingSchema]);
const FILE_PATTERN = /^(send|receive)-[A-Za-z0-9_-]{22}\.json$/;
/** What writePrivateJson leaves behind when its process is killed between writing and renaming. */
const TEMP_PATTERN = /^(send|receive)-[A-Za-z0-9_-]{22}\.json\.[0-9a-f]+\.tmp$/;
const STALE_TEMP_MS = 60_000;

export interface JournalListing {
  readonly records: JournalRecord[];
  /** Journal files that could not be read or parsed; they are removed. */
  readonly unreadable: string[];
}

export class TransferJournal {
  /** Writes to one journal file happen one after another, so an older state never lands last. */
  private readonly chains = new Map<string, Promise<void>>();

  constructor(readonly folder: string) {}

  private fileOf(kind: JournalRecord['kind'], id: string): string {
    transferId.parse(id); // Ids become file names: only [A-Za-z0-9_-].
    return path.join(this.folder, `${kind}-${id}.json`);
  }

  private serialize(file: string, step: () => Promise<void>): Promise<void> {
    const next = (this.chains.get(file) ?? Promise.resolve()).then(step, step);
    this.chains.set(file, next.catch(() => undefined));
    return next;
  }

  /** Records `record` (stamped with the current time), replacing the previous state. */
  save(record: JournalRecord): Promise<void> {
    const file = this.fileOf(record.kind, record.transferId);
    const snapshot = { ...record, updatedAt: Date.now(), pid: process.pid };
    return this.serialize(file, () => writePrivateJson(file, snapshot));
  }

  /** Forgets a transfer that ended. */
  remove(kind: JournalRecord['kind'], id: string): Promise<void> {
    const file = this.fileOf(kind, id);
    return this.serialize(file, () => fs.rm(file, { force: true }));
  }

  /** Every journal in the folder; unreadable ones are removed and named. */
  async list(): Promise<JournalListing> {
    let names: string[];
    try {
      names = await fs.readdir(this.folder);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], unreadable: [] };
      throw error;
    }
    const records: JournalRecord[] = [];
    const unreadable: string[] = [];
    for (const name of names.filter((n) => TEMP_PATTERN.test(n))) {
      const file = path.join(this.folder, name);
      const stat = await fs.stat(file).catch(() => undefined);
      if (stat && Date.now() - stat.mtimeMs > STALE_TEMP_MS) await fs.rm(file, { force: true });
    }
    for (const name of names.filter((n) => FILE_PATTERN.test(n)).sort()) {
      const file = path.join(this.folder, name);
      try {
        records.push(RecordSchema.parse(JSON.parse(await fs.readFile(file, 'utf8'))));
      } catch {
        unreadable.push(file);
        await fs.rm(file, { force: true });
      }
    }
    return { records, unreadable };
  }

  async outgoing(): Promise<OutgoingRecord[]> {
    return (await this.list()).records.filter((r): r is OutgoingRecord => r.kind === 'send');
  }

  /**
   * Removes a journal and, for a receiver, the partial files and folders its transfer created
   * (only where a transfer could have put them: see isPlacedInside).
   */
  async discard(record: JournalRecord): Promise<void> {
    if (record.kind === 'receive' && (await isPlacedInside(record))) {
      await Promise.all(record.files.map((f) => fs.rm(f.tempPath, { force: true }).catch(() => undefined)));
      for (const dir of [...record.createdDirs].reverse()) await fs.rmdir(dir).catch(() => undefined);
    }
    await this.remove(record.kind, record.transferId);
  }

  /**
   * True when another process that is still running wrote this journal: its transfer is not
   * interrupted, and must be left alone (a process id reused since is taken for alive, which only
   * delays the clean-up).
   */
  static isHeldElsewhere(record: JournalRecord): boolean {
    if (record.pid === undefined || record.pid === process.pid) return false;
    try {
      process.kill(record.pid, 0);
      return true;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'EPERM';
    }
  }

  /** True when a journal last written at `updatedAt` is past a grace period of `graceMs`. */
  static isExpired(record: JournalRecord, graceMs: number, now = Date.now()): boolean {
    return now - record.updatedAt > graceMs;
  }
}

/**
 * Whether a receiving journal's paths are ones its transfer could have made: each final name inside
 * the folder the user chose (or, for a single file saved with Save As, beside that file), each
 * temporary name the one the transfer gives that final name, each created folder inside the chosen
 * folder. A journal is the user's own private file, but one that fails this is never trusted to
 * write, truncate or remove anything.
 */
export async function isPlacedInside(record: IncomingRecord): Promise<boolean> {
  let root: string;
  try {
    root = await fs.realpath(record.accept.directory);
  } catch {
    return false;
  }
  const inside = (p: string) => isStrictlyInside(root, p);
  const saveAsDir = record.accept.saveAs !== undefined ? path.dirname(record.accept.saveAs) : undefined;
  return (
    record.files.every((f) => {
      const beside = saveAsDir !== undefined && record.files.length === 1 && path.dirname(f.finalPath) === saveAsDir;
      if (!(inside(f.finalPath) || beside)) return false;
      try {
        return f.tempPath === path.join(path.dirname(f.finalPath), temporaryNameFor(path.basename(f.finalPath), record.transferId));
      } catch {
        return false; // A final name that is not a plain file name.
      }
    }) && record.createdDirs.every(inside)
  );
}
