/**
 * The audit trail: one JSON line per event. It records who, to whom, ciphertext byte counts,
 * outcomes and times; never file names, keys or tokens (the relay has neither of the first two,
 * and the third stays out on purpose).
 *
 * Every line is `{ts, event, ...fields}`; {@link AUDIT_FIELDS} documents each field. Per event:
 *
 * | event                | fields (besides `ts` and `event`)                              |
 * | -------------------- | -------------------------------------------------------------- |
 * | `join`               | `peer`, `address`                                              |
 * | `leave`              | `peer`                                                         |
 * | `refused`            | `code`, `address`; `peer` for refusals of a hello (`BAD_PROOF`, `NOT_ALLOWED`, `JOIN_RATE_LIMITED`) |
 * | `offer`              | `transfer`, `from`, `to` (array), `cipherBytes`, `chunks`      |
 * | `accept`, `decline`  | `transfer`, `from`, `to`                                       |
 * | `complete`           | `transfer`, `from`, `to`, `cipherBytes`, `durationMs`          |
 * | `cancel`, `fail`     | `transfer`, `from`, `to`, `by`, `code`, `cipherBytes`, `durationMs` |
 *
 * `accept` to `fail` are per recipient: a transfer to three peers has one `offer` line and up
 * to three `complete`/`cancel`/`fail` lines, one per leg and attempt. A leg cut off by a dropped
 * connection ends that attempt with `fail` (`PEER_GONE`); resumed, it gets its lines again (a
 * resume's `offer` too); called off while it waits, it gets a `cancel` with the bytes of no attempt
 * (`cipherBytes` 0, `durationMs` 0).
 */
import fs from 'node:fs/promises';
import type { ErrorCode } from '../extension/core/errors';

export type AuditEvent =
  | { event: 'join'; peer: string; address: string }
  | { event: 'leave'; peer: string }
  | { event: 'refused'; code: ErrorCode; address: string; peer?: string }
  | { event: 'offer'; transfer: string; from: string; to: string[]; cipherBytes: number; chunks: number }
  | { event: 'accept' | 'decline'; transfer: string; from: string; to: string }
  | { event: 'complete'; transfer: string; from: string; to: string; cipherBytes: number; durationMs: number }
  | { event: 'cancel' | 'fail'; transfer: string; from: string; to: string; by: string; code: ErrorCode; cipherBytes: number; durationMs: number };

type KeysOfUnion<T> = T extends unknown ? keyof T : never;

/** Every field an audit line may carry. */
export type AuditField = 'ts' | KeysOfUnion<AuditEvent>;

/**
 * What each field of an audit line means. The type makes this list exhaustive: a field added to
 * {@link AuditEvent} does not compile until it is documented here. Identities are peer ids
 * (derived from public keys, docs/PROTOCOL.md §3), never display names.
 */
export const AUDIT_FIELDS: Readonly<Record<AuditField, string>> = {
  ts: 'When the relay recorded the event: ISO 8601 in UTC with milliseconds. On every line.',
  event: 'The kind of event: join, leave, refused, offer, accept, decline, complete, cancel or fail. On every line.',
  peer: 'join/leave: the peer id that joined or left. refused: the peer id the connection claimed, present for BAD_PROOF, NOT_ALLOWED and JOIN_RATE_LIMITED (too many joins by that peer id).',
  address: "join/refused: the connection's remote address as the relay sees it (a reverse proxy's address when behind one).",
  code: 'refused: why the connection was turned away. cancel/fail: the error code that ended the leg (docs/PROTOCOL.md error codes).',
  transfer: 'offer to fail: the transfer id (22 random base64url characters chosen by the sender).',
  from: "offer to fail: the sender's peer id.",
  to: "offer: the recipients' peer ids (array). accept to fail: the one recipient whose leg this line is about.",
  by: 'cancel/fail: the peer id that ended the leg: the sender (also for relay-side checks on its stream) or a recipient (also when it disconnected).',
  cipherBytes:
    'offer: the ciphertext size the sender declared. complete/cancel/fail: ciphertext bytes the relay forwarded for the transfer so far. Ciphertext only, but with the chunk count it gives the transfer\'s total plaintext size (16 bytes less per chunk): the log shows how large each transfer was, never a name.',
  chunks: 'offer: the number of ciphertext chunks declared.',
  durationMs: 'complete/cancel/fail: milliseconds from the offer to the end of this leg.',
};

export interface AuditSink {
  /** Records one event. Synchronous and non-blocking: lines are queued and written in order. */
  write(event: AuditEvent): void;
  /** Resolves once every line written before the call is on disk and the file is closed. */
  close(): Promise<void>;
}

export const nullAudit: AuditSink = { write() {}, close: async () => {} };

export interface FileAuditOptions {
  /**
   * Rotate before a line would make the current file larger than this many bytes. Lines are
   * never split, and a line larger than this still gets a fresh file of its own. Default: never
   * rotate.
   */
  maxBytes?: number;
  /** Rotated files to keep (`<path>.1` is the newest, `<path>.<keep>` the oldest). Default 5; 0 keeps none. */
  keep?: number;
  /**
   * Called once if the trail cannot be written (the sink then drops further lines). Without it
   * the error is thrown as an uncaught exception, as an unhandled stream error always was.
   */
  onError?: (error: Error) => void;
}

const FILE_MODE = 0o600;

/**
 * Appends to the JSON-lines file at `path` (created with mode 0600: the trail says who talked to
 * whom, which is for the relay's operator only), rotating by size when `maxBytes` is set. A
 * restarted relay appends to the existing file and counts its size. Files beyond `keep` left by
 * an earlier, larger `keep` are not touched.
 */
export function fileAudit(path: string, options: FileAuditOptions = {}): AuditSink {
  const { maxBytes, keep = 5, onError } = options;
  if (maxBytes !== undefined && !(Number.isSafeInteger(maxBytes) && maxBytes > 0)) {
    throw new RangeError(`Audit maxBytes must be a positive integer, got ${maxBytes}.`);
  }
  if (!(Number.isSafeInteger(keep) && keep >= 0)) throw new RangeError(`Audit keep must be a whole number, got ${keep}.`);

  /** Encoded lines waiting for the pump, oldest first. */
  let queue: Buffer[] = [];
  let file: fs.FileHandle | undefined;
  /** Bytes in the current file, including what this sink appended. */
  let size = 0;
  let failed = false;
  let closed: Promise<void> | undefined;
  /** The running pump; only one runs at a time, which keeps lines in order. */
  let pumping: Promise<void> | undefined;

  async function open(): Promise<void> {
    file = await fs.open(path, 'a', FILE_MODE);
    size = (await file.stat()).size;
  }

  async function rotate(): Promise<void> {
    const current = file;
    file = undefined;
    await current?.close();
    if (keep === 0) {
      await fs.rm(path, { force: true });
    } else {
      await fs.rm(`${path}.${keep}`, { force: true });
      for (let i = keep - 1; i >= 1; i--) await renameIfPresent(`${path}.${i}`, `${path}.${i + 1}`);
      await renameIfPresent(path, `${path}.1`);
    }
    await open();
  }

  async function append(parts: Buffer[], bytes: number): Promise<void> {
    await file!.appendFile(parts.length === 1 ? parts[0] : Buffer.concat(parts, bytes));
    size += bytes;
  }

  async function pump(): Promise<void> {
    if (!file) await open();
    while (queue.length > 0) {
      const lines = queue;
      queue = [];
      let parts: Buffer[] = [];
      let bytes = 0;
      for (const line of lines) {
        const pending = size + bytes;
        if (maxBytes !== undefined && pending > 0 && pending + line.length > maxBytes) {
          if (bytes > 0) await append(parts, bytes);
          parts = [];
          bytes = 0;
          await rotate();
        }
        parts.push(line);
        bytes += line.length;
      }
      if (bytes > 0) await append(parts, bytes);
    }
  }

  function fail(error: unknown): void {
    if (failed) return;
    failed = true;
    queue = [];
    const current = file;
    file = undefined;
    current?.close().catch(() => {});
    const err = error instanceof Error ? error : new Error(String(error));
    if (onError) onError(err);
    else
      process.nextTick(() => {
        throw err;
      });
  }

  function kick(): void {
    if (pumping || failed) return;
    pumping = pump()
      .catch(fail)
      .finally(() => {
        pumping = undefined;
        if (queue.length > 0) kick();
      });
  }

  kick(); // Create (or open) the file now, as the stream this replaced did.

  return {
    write(event) {
      if (closed || failed) return;
      queue.push(Buffer.from(JSON.stringify({ ts: new Date().toISOString(), ...event }) + '\n', 'utf8'));
      kick();
    },
    close() {
      closed ??= (async () => {
        while (pumping) await pumping;
        const current = file;
        file = undefined;
        await current?.close().catch(fail);
      })();
      return closed;
    },
  };
}

async function renameIfPresent(from: string, to: string): Promise<void> {
  try {
    await fs.rename(from, to);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}
