/**
 * The audit trail: one JSON line per event. It records who, to whom, ciphertext byte counts,
 * outcomes and times; never file names, sizes of plaintext, keys or tokens (the relay has none
 * of the first three, and the fourth stays out on purpose).
 */
import fs from 'node:fs';
import type { ErrorCode } from '../extension/core/errors';

export type AuditEvent =
  | { event: 'join'; peer: string; address: string }
  | { event: 'leave'; peer: string }
  | { event: 'refused'; code: ErrorCode; address: string; peer?: string }
  | { event: 'offer'; transfer: string; from: string; to: string[]; cipherBytes: number; chunks: number }
  | { event: 'accept' | 'decline'; transfer: string; from: string; to: string }
  | { event: 'complete'; transfer: string; from: string; to: string; cipherBytes: number; durationMs: number }
  | { event: 'cancel' | 'fail'; transfer: string; from: string; to: string; by: string; code: ErrorCode; cipherBytes: number; durationMs: number };

export interface AuditSink {
  write(event: AuditEvent): void;
  close(): Promise<void>;
}

export const nullAudit: AuditSink = { write() {}, close: async () => {} };

export function fileAudit(path: string): AuditSink {
  // Mode 0600: the trail says who talked to whom; that is for the relay's operator only.
  const stream = fs.createWriteStream(path, { flags: 'a', mode: 0o600 });
  return {
    write(event) {
      stream.write(JSON.stringify({ ts: new Date().toISOString(), ...event }) + '\n');
    },
    close: () => new Promise<void>((resolve) => stream.end(resolve)),
  };
}
