/**
 * The load tests of `npm run bench` (not of `npm test`), bounded in count and time:
 *
 *   idle       SFT_BENCH_LOAD_CLIENTS (default 1000) clients connect to one sft-relay and stay
 *              idle: the relay's RSS before and after, and the time until every one has joined.
 *   transfers  2 × SFT_BENCH_LOAD_TRANSFERS (default 50) clients; the senders each send a file
 *              of their own (SFT_BENCH_LOAD_MB, default 20 MiB, random) to their receiver, all at
 *              once; every received file is checked against its SHA-256. The aggregate throughput
 *              is compared with one transfer alone carrying the same bytes (all the files, one
 *              sender to one receiver), between the same processes, in the same run (once before
 *              and once after the simultaneous ones; their mean).
 *
 * The clients are real: the project's RelayClient (Socket.IO client, join proof, presence), and
 * sendFiles / Inbox for the transfers, many to a Node process ("load workers": this same bundle
 * started with --load-worker, driven over IPC). The relay limits join attempts per address (5 a
 * second, bursts of 30), as 1,000 teammates would each come from their own machine; so that the
 * test measures the relay and not that limit, each group of 25 clients connects from its own
 * loopback address (127.1.x.y; all of 127/8 is loopback on Linux).
 */
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { keepFreedMemoryForReuse } from '../../extension/core/allocator';
import { sizeHeapForStreaming } from '../../extension/cli/heap';
import { RelayClient } from '../../extension/core/client';
import { Identity } from '../../extension/core/crypto/identity';
import { sendFiles } from '../../extension/core/transfer/sender';
import { Inbox } from '../../extension/core/transfer/receiver';
import { sha256File } from '../hash';
import { DIST, MiB, PROBE, finish, median, randomFile, startRelayNode, waitForLine, type ProcessFigures, type Started } from './common';
import { warmPages } from './pages';
import { statusBytes } from './procfs';

const PER_ADDRESS = 25;
const addressOf = (index: number) => {
  const group = Math.floor(index / PER_ADDRESS);
  return `127.1.${Math.floor(group / 250)}.${(group % 250) + 1}`;
};

// ---- The worker side ----

type Command =
  | { type: 'connect'; url: string; names: string[]; firstIndex: number; concurrency: number }
  | { type: 'peers'; atLeast: number; timeoutMs: number }
  | { type: 'receive'; dirs: string[] }
  | { type: 'send'; jobs: Array<{ client: number; to: string; file: string[] }> }
  | { type: 'close' };

export async function loadWorker(): Promise<void> {
  // The workers stand in for sft processes: heap and memory as sft sets them (heap.ts, allocator.ts).
  sizeHeapForStreaming();
  keepFreedMemoryForReuse();
  // Each client's connection leaves from the loopback address given for it (see above). The
  // Socket.IO client opens its WebSocket with agent: false, so Node makes a new http.Agent per
  // connection and connects through Agent.prototype.createConnection: the worker gives that the
  // address of the client being started (the connection is opened synchronously in connect()).
  let localAddress: string | undefined;
  const agent = http.Agent.prototype as unknown as { createConnection: (options: net.NetConnectOpts, ...rest: unknown[]) => net.Socket };
  const createConnection = agent.createConnection;
  agent.createConnection = function (this: unknown, options: net.NetConnectOpts, ...rest: unknown[]) {
    if (localAddress) options = { ...options, localAddress } as net.NetConnectOpts;
    return createConnection.call(this, options, ...rest);
  };

  const clients: RelayClient[] = [];
  const inboxes: Inbox[] = [];
  const reply = (message: unknown) => process.send!(message);
  let receiveErrors = 0;

  process.on('message', (command: Command) => {
    void (async () => {
      try {
        if (command.type === 'connect') {
          const t0 = performance.now();
          let next = 0;
          let failures = 0;
          const firstError: string[] = [];
          const one = async () => {
            while (next < command.names.length) {
              const i = next++;
              const client = new RelayClient({ url: command.url, identity: Identity.generate(), name: command.names[i]!, reconnect: false, connectTimeoutMs: 60_000 });
              clients.push(client);
              localAddress = addressOf(command.firstIndex + i);
              const joined = client.connect();
              localAddress = undefined;
              await joined.catch((error: unknown) => {
                failures++;
                if (firstError.length === 0) firstError.push(String(error));
              });
            }
          };
          await Promise.all(Array.from({ length: command.concurrency }, one));
          reply({ type: 'connected', ms: performance.now() - t0, failures, error: firstError[0] });
        } else if (command.type === 'peers') {
          // Presence settles: every client has heard of (at least) `atLeast` others.
          const until = Date.now() + command.timeoutMs;
          const least = () => Math.min(...clients.map((c) => c.peers.size));
          while (least() < command.atLeast && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
          reply({ type: 'peers', least: least(), connected: clients.filter((c) => c.state === 'connected').length });
        } else if (command.type === 'receive') {
          command.dirs.forEach((directory, i) => {
            const inbox = new Inbox(clients[i]!);
            inboxes.push(inbox);
            inbox.on('offer', (offer) => {
              offer.accept({ directory, onConflict: 'overwrite' }).catch((error: unknown) => {
                receiveErrors++;
                process.stderr.write(`receiver ${i}: ${String(error)}\n`);
              });
            });
          });
          reply({ type: 'receiving' });
        } else if (command.type === 'send') {
          const t0 = performance.now();
          const results = await Promise.all(
            command.jobs.map(async (job) => {
              const client = clients[job.client]!;
              const started = performance.now();
              try {
                const result = await sendFiles(client, { paths: job.file, to: [client.findPeer(job.to)] });
                const failed = result.recipients.find((r) => r.outcome !== 'done');
                return { ms: performance.now() - started, ok: !failed, error: failed ? JSON.stringify(failed) : undefined };
              } catch (error) {
                return { ms: performance.now() - started, ok: false, error: String(error) };
              }
            }),
          );
          reply({ type: 'sent', ms: performance.now() - t0, results });
        } else if (command.type === 'close') {
          for (const inbox of inboxes) inbox.dispose();
          await Promise.all(clients.map((c) => c.closeGracefully(2000)));
          reply({ type: 'closed', receiveErrors });
          process.disconnect();
        }
      } catch (error) {
        reply({ type: 'error', error: error instanceof Error ? error.stack : String(error) });
      }
    })();
  });
}

// ---- The benchmark side ----

interface Worker {
  child: ChildProcess;
  probe: string;
  ask<T>(command: Command, timeoutMs: number): Promise<T>;
  exited: Promise<number | null>;
}

function startWorker(work: string, label: string): Worker {
  const probe = path.join(work, `${label}-${process.hrtime.bigint()}.json`);
  const child = fork(path.join(DIST, 'bench.js'), ['--load-worker'], {
    execArgv: ['--require', PROBE],
    env: { ...process.env, SFT_BENCH_PROBE: probe },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const ask = <T>(command: Command, timeoutMs: number) =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.off('message', onMessage);
        reject(new Error(`load worker ${label}: no answer to ${command.type} within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      const onMessage = (m: { type: string; error?: string }) => {
        clearTimeout(timer);
        child.off('message', onMessage);
        if (m.type === 'error') reject(new Error(`load worker ${label}: ${m.error}`));
        else resolve(m as T);
      };
      child.on('message', onMessage);
      child.send(command);
    });
  return { child, probe, ask, exited };
}

async function stopWorkers(workers: Worker[]): Promise<ProcessFigures[]> {
  const out: ProcessFigures[] = [];
  for (const w of workers) {
    if (w.child.connected) await w.ask({ type: 'close' }, 30_000).catch(() => w.child.kill('SIGKILL'));
    const timer = setTimeout(() => w.child.kill('SIGKILL'), 10_000);
    await w.exited;
    clearTimeout(timer);
    out.push(JSON.parse(await fs.readFile(w.probe, 'utf8').catch(() => '{"cpuSeconds":0,"maxRssBytes":0}')) as ProcessFigures);
  }
  return out;
}

async function startRelay(work: string, label: string) {
  const relay = startRelayNode(work, label, ['--port', '0', '--log-level', 'warn']);
  const [, url] = await waitForLine(relay, /^sft-relay listening on (\S+)$/);
  return { relay, url: url! };
}

async function stopRelay(relay: Started): Promise<ProcessFigures> {
  relay.child.kill('SIGTERM');
  const timer = setTimeout(() => relay.child.kill('SIGKILL'), 40_000);
  const figures = (await finish({ relay })).relay!;
  clearTimeout(timer);
  return figures;
}

export interface IdleFigures {
  clients: number;
  workers: number;
  connectSeconds: number;
  relayRssBeforeMiB: number;
  relayRssAfterMiB: number;
  relayPeakRssMiB: number;
  relayCpuSeconds: number;
  failures: number;
}

export async function runIdle(work: string, count: number): Promise<IdleFigures> {
  const { relay, url } = await startRelay(work, 'idle-relay');
  const workers: Worker[] = [];
  try {
    await new Promise((r) => setTimeout(r, 1000));
    const rssBefore = statusBytes(relay.child.pid!, 'VmRSS')!;
    const perWorker = 250;
    const shares: number[] = [];
    for (let left = count; left > 0; left -= perWorker) shares.push(Math.min(perWorker, left));
    for (let i = 0; i < shares.length; i++) workers.push(startWorker(work, `idle-worker${i}`));
    const t0 = performance.now();
    let first = 0;
    const answers = await Promise.all(
      workers.map((w, i) => {
        const names = Array.from({ length: shares[i]! }, (_, j) => `idle-${i}-${j}`);
        const firstIndex = first;
        first += names.length;
        return w.ask<{ ms: number; failures: number; error?: string }>({ type: 'connect', url, names, firstIndex, concurrency: 25 }, 300_000);
      }),
    );
    const connectSeconds = (performance.now() - t0) / 1000;
    const failures = answers.reduce((n, a) => n + a.failures, 0);
    if (failures > 0) process.stdout.write(`load idle: ${failures} clients failed to join (first: ${answers.find((a) => a.error)?.error})\n`);
    // Presence: every client should hear of every other.
    const peers = await Promise.all(workers.map((w) => w.ask<{ least: number; connected: number }>({ type: 'peers', atLeast: count - failures - 1, timeoutMs: 60_000 }, 90_000)));
    const connected = peers.reduce((n, p) => n + p.connected, 0);
    const least = Math.min(...peers.map((p) => p.least));
    if (connected !== count || least !== count - 1) process.stdout.write(`load idle: ${connected} of ${count} connected; the least-informed client sees ${least} peers\n`);
    await new Promise((r) => setTimeout(r, 2000));
    const rssAfter = statusBytes(relay.child.pid!, 'VmRSS')!;
    const peak = statusBytes(relay.child.pid!, 'VmHWM')!;
    await stopWorkers(workers.splice(0));
    const relayFigures = await stopRelay(relay);
    return {
      clients: connected,
      workers: shares.length,
      connectSeconds,
      relayRssBeforeMiB: rssBefore / MiB,
      relayRssAfterMiB: rssAfter / MiB,
      relayPeakRssMiB: Math.max(peak, relayFigures.maxRssBytes) / MiB,
      relayCpuSeconds: relayFigures.cpuSeconds,
      failures: count - connected,
    };
  } finally {
    await stopWorkers(workers);
    if (relay.child.exitCode === null) relay.child.kill('SIGKILL');
  }
}

export interface TransfersFigures {
  transfers: number;
  fileMiB: number;
  singleMBps: number;
  singleSeconds: number[];
  aggregateMBps: number;
  aggregateSeconds: number;
  ratio: number;
  perTransferSeconds: { min: number; median: number; max: number };
  verified: number;
  relayCpuSecondsPerGiB: number;
  relayPeakRssMiB: number;
  senderProcessPeakRssMiB: number;
  receiverProcessPeakRssMiB: number;
}

export async function runTransfers(work: string, transfers: number, megabytes: number): Promise<TransfersFigures> {
  const size = megabytes * MiB;
  const dir = await fs.mkdtemp(path.join(work, 'load-'));
  const files: string[] = [];
  const outDirs: string[] = [];
  for (let i = 0; i < transfers; i++) {
    files.push(path.join(dir, `in-${i}.bin`));
    await randomFile(files[i]!, size);
    outDirs.push(path.join(dir, `out-${i}`));
    await fs.mkdir(outDirs[i]!);
  }
  const expected = await Promise.all(files.map((f) => sha256File(f)));
  const { relay, url } = await startRelay(work, 'load-relay');
  const senders = startWorker(work, 'load-senders');
  const receivers = startWorker(work, 'load-receivers');
  const workers = [senders, receivers];
  try {
    const names = (prefix: string) => Array.from({ length: transfers }, (_, i) => `${prefix}${i}`);
    await Promise.all([
      senders.ask({ type: 'connect', url, names: names('s'), firstIndex: 0, concurrency: 10 }, 120_000),
      receivers.ask({ type: 'connect', url, names: names('r'), firstIndex: transfers, concurrency: 10 }, 120_000),
    ]);
    await Promise.all(workers.map((w) => w.ask({ type: 'peers', atLeast: 2 * transfers - 1, timeoutMs: 30_000 }, 60_000)));
    await receivers.ask({ type: 'receive', dirs: outDirs }, 10_000);
    const timeout = 300_000 + transfers * megabytes * 1000;
    type Sent = { ms: number; results: Array<{ ms: number; ok: boolean; error?: string }> };
    const check = (sent: Sent) => {
      const bad = sent.results.find((r) => !r.ok);
      if (bad) throw new Error(`a load transfer failed: ${bad.error}`);
    };
    const verify = async (what: string) => {
      for (let i = 0; i < transfers; i++) {
        const got = path.join(outDirs[i]!, path.basename(files[i]!));
        if ((await sha256File(got)) !== expected[i]) throw new Error(`load: ${what}: file ${i} was corrupted`);
        await fs.rm(got);
      }
    };
    // One transfer alone carrying the same bytes (every file, from s0 to r0), before and after the
    // simultaneous ones, so that drift on the machine touches both alike: their mean is the
    // single-transfer throughput. (A single 20 MiB transfer is over in a tenth of a second, too
    // short to measure steadily.)
    const single = async () => {
      warmPages(size * transfers);
      const sent = await senders.ask<Sent>({ type: 'send', jobs: [{ client: 0, to: 'r0', file: files }] }, timeout);
      check(sent);
      // Every file lands in r0's folder: check them there, then move them out of the way.
      for (let i = 0; i < transfers; i++) {
        const got = path.join(outDirs[0]!, path.basename(files[i]!));
        if ((await sha256File(got)) !== expected[i]) throw new Error(`load: the single transfer corrupted file ${i}`);
        await fs.rm(got);
      }
      return sent.ms / 1000;
    };
    const singleSeconds = [await single()];
    warmPages(size * transfers);
    const all = await senders.ask<Sent>({ type: 'send', jobs: files.map((file, i) => ({ client: i, to: `r${i}`, file: [file] })) }, timeout);
    check(all);
    await verify('the simultaneous transfers');
    const verified = transfers;
    singleSeconds.push(await single());
    const [senderFigures, receiverFigures] = await stopWorkers(workers.splice(0));
    const relayFigures = await stopRelay(relay);
    const singleMean = (singleSeconds[0]! + singleSeconds[1]!) / 2;
    const per = all.results.map((r) => r.ms / 1000).sort((a, b) => a - b);
    const aggregateSeconds = all.ms / 1000;
    const singleMBps = (size * transfers) / 1e6 / singleMean;
    const aggregateMBps = (size * transfers) / 1e6 / aggregateSeconds;
    return {
      transfers,
      fileMiB: megabytes,
      singleMBps,
      singleSeconds,
      aggregateMBps,
      aggregateSeconds,
      ratio: aggregateMBps / singleMBps,
      perTransferSeconds: { min: per[0]!, median: median(per), max: per.at(-1)! },
      verified,
      // Over the relay's life: the two single transfers and the simultaneous ones.
      relayCpuSecondsPerGiB: relayFigures.cpuSeconds / ((3 * transfers * size) / 2 ** 30),
      relayPeakRssMiB: relayFigures.maxRssBytes / MiB,
      senderProcessPeakRssMiB: senderFigures!.maxRssBytes / MiB,
      receiverProcessPeakRssMiB: receiverFigures!.maxRssBytes / MiB,
    };
  } finally {
    await stopWorkers(workers);
    if (relay.child.exitCode === null) relay.child.kill('SIGKILL');
    await fs.rm(dir, { recursive: true, force: true });
  }
}
