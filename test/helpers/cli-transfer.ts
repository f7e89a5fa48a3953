/**
 * One relay process and `sft` senders and receivers around a generated file, for the tests that
 * kill and restart real processes (restart.test.ts, faults.test.ts). The processes are stopped
 * when the test file ends (processes.ts), the folders removed.
 */
import { after } from 'node:test';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { start, startRelayProcess, waitForLine, type Running } from './processes';
import { writeRandomFile } from './harness';
import { DEFAULT_CHUNK_SIZE } from '../../extension/core/crypto/stream';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true });
});

export async function setUpCliTransfer(options: { prefix: string; size: number; relayArgs?: string[] }) {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), `sft-${options.prefix}-`));
  dirs.push(work);
  const auditLog = path.join(work, 'audit.jsonl');
  const { relay, url } = await startRelayProcess(['--audit-log', auditLog, ...(options.relayArgs ?? [])]);
  const src = path.join(work, 'src', 'big.bin');
  const sum = await writeRandomFile(src, options.size, options.prefix);
  const out = path.join(work, 'out');
  const identity = (name: string) => path.join(work, `id-${name}`);
  const sft = (args: string[]) => start('sft', [...args, '--relay', url]);
  const receive = async (name = 'bob', folder = out, once = true) => {
    const p = sft(['receive', '--out', folder, '--yes', ...(once ? ['--once'] : []), '--name', name, '--identity', identity(name)]);
    await waitForLine(p.stderr, /Waiting for files/, 30_000);
    return p;
  };
  const send = (paths = [src], to = 'bob') => sft(['send', ...paths, '--to', to, '--name', 'alice', '--identity', identity('alice')]);
  const resume = () => sft(['resume', '--name', 'alice', '--identity', identity('alice')]);
  /** The chunks a receiver's journal records as verified and synced, once at least `min`. */
  const journaledChunks = async (min: number, timeoutMs = 60_000, name = 'bob') => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const folder = path.join(identity(name), 'transfers');
      for (const file of await fs.readdir(folder).catch(() => [] as string[])) {
        // Journals are replaced through temporary files (…json.<random>.tmp): read only the real ones.
        if (!/^receive-.*\.json$/.test(file)) continue;
        const text = await fs.readFile(path.join(folder, file), 'utf8').catch(() => '{}');
        const verified = (JSON.parse(text) as { verified?: number }).verified ?? 0;
        if (verified >= min) return verified;
      }
      if (Date.now() > deadline) throw new Error(`${name}'s journal never reached ${min} chunks`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  const journals = async (name: string) => (await fs.readdir(path.join(identity(name), 'transfers')).catch(() => [] as string[])).filter((n) => n.endsWith('.json'));
  const audit = async () => (await fs.readFile(auditLog, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  return { relay, url, work, src, out, sum, identity, receive, send, resume, journaledChunks, journals, audit };
}

/** The stderr of each process, for assertion messages. */
/** How many chunks of `sft`'s default size hold this many MiB: tests wait for progress in bytes. */
export const chunksIn = (mebibytes: number) => Math.ceil((mebibytes * 1024 * 1024) / DEFAULT_CHUNK_SIZE);

export const stderrOf = (...ps: Running[]) => ps.map((p) => p.stderr.join('\n')).join('\n---\n');
