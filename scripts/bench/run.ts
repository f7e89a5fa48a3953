/**
 * `npm run bench`: the whole comparison in one go. Moves one file of random data (1 GiB by
 * default) from a sender process to a receiver process through a relay on this machine, for each
 * path below, several times, and reports the medians: throughput (whole-process wall time), CPU
 * seconds per GiB (all processes, and per process) and peak RSS per process. Then the load tests.
 * Everything runs in the same session, so ratios hold on a noisy machine.
 *
 *   tcp       plain TCP relay, no encryption (scripts/bench/tcp-relay.ts): the baseline
 *   aead      the same relay with AES-256-GCM over 1 MiB chunks at the ends and the fewest copies
 *             (tcp-relay.ts): the floor any Node design with this cipher reaches on this path
 *   sft       sft-relay with sft send / sft receive: end-to-end encrypted, full protocol
 *   cluster   the same, with the sender and the receiver on two sft-relay nodes joined through
 *             a redis-server started for each run (skipped when redis-server is missing);
 *             also reports Redis's CPU and its peak memory (INFO memory used_memory_peak)
 *   wormhole  magic-wormhole through its transit relay (skipped when not installed; external.ts)
 *   scp       scp -J through an sshd jump host (skipped when not installed or not root; external.ts)
 *   load      1,000 idle clients on one relay; 50 simultaneous transfers (load.ts)
 *   memory    one sft transfer at each of several sizes (100 MiB, 1 GiB, 4 GiB): does peak RSS
 *             stay flat as the file grows?
 *
 * Environment: SFT_BENCH_MB (default 1024), SFT_BENCH_RUNS (default 3),
 * SFT_BENCH_OUT (default .artifacts/bench.json), SFT_BENCH_ONLY (comma-separated parts from the
 * list above; also `npm run bench -- --only=load`), SFT_BENCH_LOAD_CLIENTS (default 1000),
 * SFT_BENCH_LOAD_TRANSFERS (default 50), SFT_BENCH_LOAD_MB (default 20), SFT_BENCH_MEMORY_MB (default
 * 100,1024,4096), SFT_BENCH_NODE_FLAGS (Node flags for every measured process, e.g.
 * "--cpu-prof --cpu-prof-dir=/tmp/prof"), SFT_BENCH_VERBOSE (user and system CPU per process), SFT_BENCH_WARM
 * (0 or 1: prepare memory before each transfer, pages.ts; by default where a balloon reports pages).
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { formatBytes } from '../../extension/core/format';
import { sha256File } from '../hash';
import { startRedis } from '../redis-server';
import { DIST, GiB, ROOT, finish, markTransferStart, median, randomFile, startNode, startRelayNode, waitForLine, type ProcessFigures } from './common';
import { prepareSsh, runScp, runWormhole, scpMissing, wormholeMissing, type Ssh } from './external';
import { loadWorker, runIdle, runTransfers, type IdleFigures, type TransfersFigures } from './load';
import { pageCondition, warmPages } from './pages';

interface RunFigures {
  seconds: number;
  processes: Record<string, ProcessFigures>;
  /** Two-node runs: Redis's CPU seconds during the run and its peak memory. */
  redis?: { cpuSeconds: number; usedMemoryPeakBytes: number };
}

const PARTS = ['tcp', 'aead', 'sft', 'cluster', 'wormhole', 'scp', 'load', 'memory'] as const;
type Part = (typeof PARTS)[number];
/** The result names in bench.json (kept from earlier versions). */
const PATH_NAMES: Record<Exclude<Part, 'load' | 'memory'>, string> = { tcp: 'tcp-relay', aead: 'tcp-relay-aead', sft: 'sft', cluster: 'sft-2-nodes', wormhole: 'wormhole', scp: 'scp-jump' };

function selectedParts(): Set<Part> {
  const arg = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length);
  const text = arg ?? process.env.SFT_BENCH_ONLY ?? '';
  if (text.trim() === '') return new Set(PARTS);
  const wanted = text.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = wanted.filter((w) => !(PARTS as readonly string[]).includes(w));
  if (unknown.length > 0) throw new Error(`unknown part(s) ${unknown.join(', ')}; choose from ${PARTS.join(', ')}`);
  return new Set(wanted as Part[]);
}

async function runTcp(work: string, file: string, out: string, aead: boolean): Promise<RunFigures> {
  const script = path.join(DIST, 'bench-tcp-relay.js');
  const relay = startNode(work, 'relay', script, ['relay']);
  const [port] = await waitForLine(relay, /^\d+$/);
  const suffix = aead ? '-aead' : '';
  const receiver = startNode(work, 'receiver', script, [`recv${suffix}`, port!, out]);
  await new Promise((r) => setTimeout(r, 200)); // The receiver registers first.
  await markTransferStart(relay);
  const t0 = performance.now();
  const sender = startNode(work, 'sender', script, [`send${suffix}`, port!, file]);
  const processes = await finish({ sender, receiver, relay });
  return { seconds: (performance.now() - t0) / 1000, processes };
}

async function runSft(work: string, file: string, outDir: string, run: number): Promise<RunFigures> {
  const relay = startRelayNode(work, 'relay', ['--port', '0', '--log-level', 'warn']);
  const [, url] = await waitForLine(relay, /^sft-relay listening on (\S+)$/);
  const common = ['--relay', url!, '--identity'];
  const receiver = startNode(work, 'receiver', path.join(DIST, 'cli.js'), ['receive', '--out', outDir, '--yes', '--once', '--name', `recv${run}`, ...common, path.join(work, 'id-recv')]);
  await waitForLine(receiver, /Waiting for files/);
  await markTransferStart(relay);
  const t0 = performance.now();
  const sender = startNode(work, 'sender', path.join(DIST, 'cli.js'), ['send', file, '--to', `recv${run}`, '--name', 'sender', ...common, path.join(work, 'id-send')]);
  const clients = await finish({ sender, receiver });
  const seconds = (performance.now() - t0) / 1000;
  relay.child.kill('SIGTERM');
  return { seconds, processes: { ...clients, ...(await finish({ relay })) } };
}

async function runSftTwoNodes(work: string, file: string, outDir: string, run: number): Promise<RunFigures> {
  const redis = await startRedis();
  try {
    const nodeArgs = ['--port', '0', '--log-level', 'warn', '--redis', redis.url];
    const relay = startRelayNode(work, 'relay', nodeArgs);
    const relay2 = startRelayNode(work, 'relay2', nodeArgs);
    const [, senderUrl] = await waitForLine(relay, /^sft-relay listening on (\S+)$/);
    const [, receiverUrl] = await waitForLine(relay2, /^sft-relay listening on (\S+)$/);
    const identity = ['--identity'];
    const receiver = startNode(work, 'receiver', path.join(DIST, 'cli.js'), ['receive', '--out', outDir, '--yes', '--once', '--name', `recv2n${run}`, '--relay', receiverUrl!, ...identity, path.join(work, 'id-recv')]);
    await waitForLine(receiver, /Waiting for files/);
    await markTransferStart(relay, relay2);
    const cpuBefore = await redisCpu(redis);
    const t0 = performance.now();
    const sender = startNode(work, 'sender', path.join(DIST, 'cli.js'), ['send', file, '--to', `recv2n${run}`, '--name', 'sender', '--relay', senderUrl!, ...identity, path.join(work, 'id-send')]);
    const clients = await finish({ sender, receiver });
    const seconds = (performance.now() - t0) / 1000;
    const cpuSeconds = (await redisCpu(redis)) - cpuBefore;
    const usedMemoryPeakBytes = Number((await redis.info('memory')).used_memory_peak);
    for (const r of [relay, relay2]) r.child.kill('SIGTERM');
    return { seconds, processes: { ...clients, ...(await finish({ relay, relay2 })) }, redis: { cpuSeconds, usedMemoryPeakBytes } };
  } finally {
    await redis.stop();
  }
}

async function redisCpu(redis: Awaited<ReturnType<typeof startRedis>>): Promise<number> {
  const cpu = await redis.info('cpu');
  return Number(cpu.used_cpu_sys) + Number(cpu.used_cpu_user);
}

export interface MemoryFigures {
  /** One sft transfer per size: peak RSS of each process, and its throughput. */
  sizes: Array<{ mebibytes: number; mbPerSecond: number; peakRssMiB: Record<string, number> }>;
  /** Largest peak ÷ smallest peak over the sizes, per process (1.0 = perfectly flat). */
  spread: Record<string, number>;
}

/** Peak RSS of relay, sender and receiver for one sft transfer at each size (flat = it streams). */
async function runMemory(work: string, sizesMiB: number[]): Promise<MemoryFigures> {
  const sizes: MemoryFigures['sizes'] = [];
  for (const mebibytes of sizesMiB) {
    const file = path.join(work, `memory-${mebibytes}.bin`);
    const outDir = path.join(work, `memory-out-${mebibytes}`);
    process.stdout.write(`memory: ${mebibytes} MiB through sft…\n`);
    await randomFile(file, mebibytes * 2 ** 20);
    warmPages(mebibytes * 2 ** 20);
    const figures = await runSft(work, file, outDir, 1000 + mebibytes);
    if ((await sha256File(path.join(outDir, path.basename(file)))) !== (await sha256File(file))) throw new Error(`sft corrupted the ${mebibytes} MiB file`);
    await fs.rm(outDir, { recursive: true });
    await fs.rm(file);
    const peakRssMiB = Object.fromEntries(Object.entries(figures.processes).map(([name, f]) => [name, f.maxRssBytes / 2 ** 20]));
    sizes.push({ mebibytes, mbPerSecond: (mebibytes * 2 ** 20) / 1e6 / figures.seconds, peakRssMiB });
  }
  const names = Object.keys(sizes[0]?.peakRssMiB ?? {});
  const spread = Object.fromEntries(names.map((n) => [n, Math.max(...sizes.map((x) => x.peakRssMiB[n]!)) / Math.min(...sizes.map((x) => x.peakRssMiB[n]!))]));
  return { sizes, spread };
}

function haveRedis(): boolean {
  return spawnSync('redis-server', ['--version']).status === 0;
}

const fixed = (n: number | undefined, digits = 1) => (n === undefined || !Number.isFinite(n) ? '–' : n.toFixed(digits));

function summarise(list: RunFigures[], size: number) {
  const names = Object.keys(list[0]!.processes);
  const gib = size / GiB;
  const relays = names.filter((p) => p.startsWith('relay'));
  return {
    mbPerSecond: median(list.map((r) => size / 1e6 / r.seconds)),
    cpuSecondsPerGiB: median(list.map((r) => Object.values(r.processes).reduce((n, p) => n + p.cpuSeconds, 0) / gib)),
    // Every relay node together (one, or two joined through Redis); Redis is reported apart.
    relayCpuSecondsPerGiB: median(list.map((r) => relays.reduce((n, p) => n + r.processes[p]!.cpuSeconds, 0) / gib)),
    // The same without the relays' start-up: what forwarding the GiB cost a relay already running.
    relayForwardingCpuSecondsPerGiB: median(list.map((r) => relays.reduce((n, p) => n + (r.processes[p]!.cpuSecondsSinceMark ?? r.processes[p]!.cpuSeconds), 0) / gib)),
    cpuSecondsPerGiBByProcess: Object.fromEntries(names.map((p) => [p, median(list.map((r) => r.processes[p]!.cpuSeconds / gib))])),
    peakRssMiB: Object.fromEntries(names.map((p) => [p, median(list.map((r) => r.processes[p]!.maxRssBytes / 2 ** 20))])),
    // Where a process's CPU can hide: V8's full collections per GiB (external programs: none).
    fullGcsPerGiBByProcess: Object.fromEntries(names.flatMap((p) => (list[0]!.processes[p]!.fullGcs === undefined ? [] : [[p, median(list.map((r) => r.processes[p]!.fullGcs! / gib))]]))),
    ...(list[0]!.redis
      ? {
          redisCpuSecondsPerGiB: median(list.map((r) => r.redis!.cpuSeconds / gib)),
          redisUsedMemoryPeakMiB: median(list.map((r) => r.redis!.usedMemoryPeakBytes / 2 ** 20)),
        }
      : {}),
    runs: list,
  };
}

type Summary = ReturnType<typeof summarise>;

interface Goal {
  goal: string;
  value: number | undefined;
  target: string;
  met: boolean | undefined;
  note?: string;
}

function goals(summary: Record<string, Summary>, size: number, idle?: IdleFigures, transfers?: TransfersFigures, memory?: MemoryFigures): Goal[] {
  const sft = summary.sft;
  const tcp = summary['tcp-relay'];
  const others = ['wormhole', 'scp-jump'].map((n) => summary[n]).filter((s): s is Summary => s !== undefined);
  const best = others.length > 0 ? Math.max(...others.map((s) => s.mbPerSecond)) : undefined;
  const out: Goal[] = [];
  const add = (goal: string, value: number | undefined, target: string, ok: (v: number) => boolean, note?: string) =>
    out.push({ goal, value, target, met: value === undefined ? undefined : ok(value), ...(note ? { note } : {}) });
  add('sft MB/s ÷ best of magic-wormhole and scp -J', sft && best ? sft.mbPerSecond / best : undefined, '≥ 2×', (v) => v >= 2);
  add('sft MB/s ÷ plain TCP relay', sft && tcp ? sft.mbPerSecond / tcp.mbPerSecond : undefined, '≥ 45%', (v) => v >= 0.45);
  add('sft relay CPU s per GiB forwarded (start-up excluded)', sft?.relayForwardingCpuSecondsPerGiB, '≤ 1.5', (v) => v <= 1.5);
  add('sft CPU s per GiB, all processes', sft?.cpuSecondsPerGiB, '≤ 6', (v) => v <= 6);
  add('sft relay peak RSS MiB', sft?.peakRssMiB.relay, '≤ 80 (1 GiB file)', (v) => v <= 80, size === GiB ? undefined : `measured with ${formatBytes(size)}, not 1 GiB`);
  add(`relay RSS MiB with ${idle?.clients ?? 1000} idle clients`, idle?.relayRssAfterMiB, '≤ 150 (1,000 clients)', (v) => v <= 150);
  add(`aggregate ÷ single throughput, ${transfers?.transfers ?? 50} simultaneous transfers`, transfers?.ratio, '≥ 80%', (v) => v >= 0.8);
  const sizes = memory ? memory.sizes.map((x) => `${x.mebibytes}`).join(', ') + ' MiB' : '100 MiB to 4 GiB';
  const flattest = memory ? Math.max(...Object.values(memory.spread)) : undefined;
  add(`peak RSS, largest ÷ smallest over ${sizes} (worst of relay, sender, receiver)`, flattest, '≤ 1.1×', (v) => v <= 1.1);
  return out;
}

async function main() {
  if (process.argv.includes('--load-worker')) return loadWorker();
  const parts = selectedParts();
  const megabytes = Number(process.env.SFT_BENCH_MB ?? 1024);
  const runs = Number(process.env.SFT_BENCH_RUNS ?? 3);
  const size = megabytes * 1024 * 1024;
  const started = performance.now();
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-bench-'));
  // The AEAD floor's throwaway key, for its two ends (environment, never argv).
  process.env.SFT_BENCH_AEAD_KEY = crypto.randomBytes(32).toString('hex');
  try {
    const skipped: Record<string, string> = {};
    const paths = (['tcp', 'aead', 'sft', 'cluster', 'wormhole', 'scp'] as const).filter((p) => parts.has(p));
    const missing: Partial<Record<Part, string | undefined>> = {
      cluster: haveRedis() ? undefined : 'redis-server not found (apt-get install redis-server)',
      wormhole: wormholeMissing(),
      scp: scpMissing(),
    };
    for (const p of paths) {
      const why = missing[p];
      if (why) {
        skipped[PATH_NAMES[p]] = why;
        process.stdout.write(`skipping ${PATH_NAMES[p]}: ${why}\n`);
      }
    }
    const active = paths.filter((p) => !missing[p]);
    const results: Record<string, RunFigures[]> = Object.fromEntries(active.map((p) => [PATH_NAMES[p], []]));

    if (active.length > 0) {
      const file = path.join(work, 'payload.bin');
      process.stdout.write(`generating ${formatBytes(size)} of random data…\n`);
      await randomFile(file, size);
      const expected = await sha256File(file);
      const ssh: Ssh | undefined = active.includes('scp') ? await prepareSsh(work) : undefined;
      const check = async (name: string, got: string, run: number) => {
        // Every run is checked: a tool that fails quietly must not post a figure.
        if (run === 0 || name !== 'tcp-relay') {
          if ((await sha256File(got)) !== expected) throw new Error(`${name} corrupted the file`);
        }
      };
      for (let run = 0; run < runs; run++) {
        // Alternate the paths, and start each run with the next one, so that neither drift on the
        // machine nor what ran just before favours one path.
        for (const p of active.map((_, i) => active[(i + run) % active.length]!)) {
          const name = PATH_NAMES[p];
          warmPages(size);
          if (p === 'tcp' || p === 'aead') {
            const out = path.join(work, `${name}-out.bin`);
            results[name]!.push(await runTcp(work, file, out, p === 'aead'));
            await check(name, out, run);
            await fs.rm(out);
          } else if (p === 'sft' || p === 'cluster') {
            const outDir = path.join(work, `${name}-out-${run}`);
            results[name]!.push(p === 'sft' ? await runSft(work, file, outDir, run) : await runSftTwoNodes(work, file, outDir, run));
            await check(name, path.join(outDir, 'payload.bin'), run);
            await fs.rm(outDir, { recursive: true });
          } else {
            const out = path.join(work, `${name}-out.bin`);
            results[name]!.push(p === 'wormhole' ? await runWormhole(work, file, out) : await runScp(work, ssh!, file, out));
            await check(name, out, run);
            await fs.rm(out);
          }
        }
        const rates = Object.entries(results).map(([name, list]) => `${name} ${(size / 1e6 / list.at(-1)!.seconds).toFixed(0)} MB/s`);
        process.stdout.write(`run ${run + 1}/${runs}: ${rates.join(', ')}\n`);
      }
      await fs.rm(file);
    }

    let idle: IdleFigures | undefined;
    let transfers: TransfersFigures | undefined;
    if (parts.has('load')) {
      const clients = Number(process.env.SFT_BENCH_LOAD_CLIENTS ?? 1000);
      const count = Number(process.env.SFT_BENCH_LOAD_TRANSFERS ?? 50);
      const loadMB = Number(process.env.SFT_BENCH_LOAD_MB ?? 20);
      process.stdout.write(`load: ${clients} idle clients on one relay…\n`);
      idle = await runIdle(work, clients);
      process.stdout.write(`load: ${idle.clients} joined in ${idle.connectSeconds.toFixed(1)} s; relay RSS ${idle.relayRssBeforeMiB.toFixed(0)} → ${idle.relayRssAfterMiB.toFixed(0)} MiB\n`);
      process.stdout.write(`load: ${count} simultaneous transfers of ${loadMB} MiB between ${2 * count} clients…\n`);
      transfers = await runTransfers(work, count, loadMB);
    }

    const summary = Object.fromEntries(Object.entries(results).map(([name, list]) => [name, summarise(list, size)]));
    const sft = summary.sft;
    const tcp = summary['tcp-relay'];
    const floor = summary['tcp-relay-aead'];
    let memory: MemoryFigures | undefined;
    if (parts.has('memory')) {
      const sizesMiB = (process.env.SFT_BENCH_MEMORY_MB ?? '100,1024,4096').split(',').map(Number).filter((n) => n > 0);
      memory = await runMemory(work, sizesMiB);
    }
    const goalList = goals(summary, size, idle, transfers, memory);
    const report = {
      date: new Date().toISOString(),
      machine: { cpu: os.cpus()[0]?.model, cores: os.cpus().length, memoryGiB: Math.round(os.totalmem() / GiB), node: process.version, platform: `${os.platform()} ${os.release()}` },
      fileBytes: size,
      runs,
      pages: pageCondition(),
      parts: [...parts],
      ...(sft && tcp ? { ratioToTcpRelay: sft.mbPerSecond / tcp.mbPerSecond } : {}),
      ...(sft && floor ? { ratioToAeadFloor: sft.mbPerSecond / floor.mbPerSecond } : {}),
      results: summary,
      skipped,
      ...(idle || transfers ? { load: { idle, transfers } } : {}),
      ...(memory ? { memory } : {}),
      goals: goalList,
      benchSeconds: 0,
    };

    if (Object.keys(summary).length > 0) {
      const pages = report.pages === 'warmed' ? '; memory warmed before each transfer (scripts/bench/pages.ts)' : '';
      process.stdout.write(`\n${formatBytes(size)}, median of ${runs}, ${report.machine.cores} × ${report.machine.cpu}, Node ${process.version}${pages}\n\n`);
      process.stdout.write('| path | MB/s | CPU s per GiB (all) | relay CPU s per GiB (forwarding) | sender CPU s per GiB | receiver CPU s per GiB | peak RSS MiB (relay / sender / receiver) |\n|---|---|---|---|---|---|---|\n');
      for (const [name, s] of Object.entries(summary)) {
        const rss = s.peakRssMiB;
        const relays = Object.keys(rss).filter((p) => p.startsWith('relay')).map((p) => fixed(rss[p], 0)).join(' + ');
        const cpu = s.cpuSecondsPerGiBByProcess;
        process.stdout.write(`| ${name} | ${fixed(s.mbPerSecond, 0)} | ${fixed(s.cpuSecondsPerGiB)} | ${fixed(s.relayCpuSecondsPerGiB)} (${fixed(s.relayForwardingCpuSecondsPerGiB)}) | ${fixed(cpu.sender)} | ${fixed(cpu.receiver)} | ${relays} / ${fixed(rss.sender, 0)} / ${fixed(rss.receiver, 0)} |\n`);
      }
      if (sft && floor) {
        process.stdout.write(
          `\nsft ÷ AEAD floor (tcp-relay-aead): ${((100 * sft.mbPerSecond) / floor.mbPerSecond).toFixed(0)}% of its MB/s; ` +
            `CPU s per GiB ${fixed(sft.cpuSecondsPerGiB)} against its ${fixed(floor.cpuSecondsPerGiB)} (relay ${fixed(sft.relayForwardingCpuSecondsPerGiB)} against ${fixed(floor.relayForwardingCpuSecondsPerGiB)})\n`,
        );
      }
      const cluster = summary['sft-2-nodes'];
      if (cluster) {
        const byProcess = Object.entries(cluster.cpuSecondsPerGiBByProcess).map(([p, v]) => `${p} ${v.toFixed(1)}`);
        process.stdout.write(`\nsft-2-nodes: CPU s per GiB by process: ${byProcess.join(', ')}, redis ${cluster.redisCpuSecondsPerGiB!.toFixed(1)} (not in the totals); Redis used_memory_peak ${cluster.redisUsedMemoryPeakMiB!.toFixed(1)} MiB\n`);
      }
      const wormhole = summary.wormhole;
      if (wormhole) {
        process.stdout.write(`wormhole: the mailbox server (in the totals) used ${fixed(wormhole.cpuSecondsPerGiBByProcess.mailbox, 2)} CPU s per GiB, peak RSS ${fixed(wormhole.peakRssMiB.mailbox, 0)} MiB\n`);
      }
      for (const [name, s] of Object.entries(summary)) {
        const gcs = Object.entries(s.fullGcsPerGiBByProcess);
        if (name.startsWith('sft') && gcs.length > 0) process.stdout.write(`${name}: V8 full collections per GiB: ${gcs.map(([p, v]) => `${p} ${v.toFixed(0)}`).join(', ')}\n`);
      }
      if (summary['scp-jump']) {
        process.stdout.write('scp-jump: relay = the jump host sshd, receiver = the destination sshd with its SFTP server, sender = scp, ssh and ssh -W\n');
      }
    }
    if (idle) {
      process.stdout.write(`\nidle clients: ${idle.clients} joined in ${idle.connectSeconds.toFixed(1)} s (${idle.workers} load workers); relay RSS ${idle.relayRssBeforeMiB.toFixed(0)} MiB before, ${idle.relayRssAfterMiB.toFixed(0)} MiB after (peak ${idle.relayPeakRssMiB.toFixed(0)} MiB); the relay used ${idle.relayCpuSeconds.toFixed(1)} CPU s in all\n`);
    }
    if (transfers) {
      const t = transfers;
      process.stdout.write(
        `simultaneous transfers: ${t.transfers} × ${t.fileMiB} MiB, ${t.verified} verified by SHA-256: ${t.aggregateMBps.toFixed(0)} MB/s aggregate in ${t.aggregateSeconds.toFixed(1)} s ` +
          `(each took ${t.perTransferSeconds.min.toFixed(1)}–${t.perTransferSeconds.max.toFixed(1)} s, median ${t.perTransferSeconds.median.toFixed(1)}); one transfer alone with the same ${t.transfers * t.fileMiB} MiB: ${t.singleMBps.toFixed(0)} MB/s ` +
          `(${t.singleSeconds.map((s) => s.toFixed(1)).join(' s before, ')} s after); relay ${t.relayCpuSecondsPerGiB.toFixed(1)} CPU s per GiB, peak RSS ${t.relayPeakRssMiB.toFixed(0)} MiB\n`,
      );
    }
    if (memory) {
      process.stdout.write('\n| file | MB/s | peak RSS MiB (relay / sender / receiver) |\n|---|---|---|\n');
      for (const x of memory.sizes) process.stdout.write(`| ${x.mebibytes} MiB | ${x.mbPerSecond.toFixed(0)} | ${fixed(x.peakRssMiB.relay, 0)} / ${fixed(x.peakRssMiB.sender, 0)} / ${fixed(x.peakRssMiB.receiver, 0)} |\n`);
    }
    process.stdout.write('\n| goal | measured | target | met |\n|---|---|---|---|\n');
    for (const g of goalList) {
      const value = g.value === undefined ? 'not measured' : g.target.includes('%') ? `${(g.value * 100).toFixed(0)}%` : g.target.includes('×') ? `${g.value.toFixed(2)}×` : g.value.toFixed(1);
      process.stdout.write(`| ${g.goal} | ${value} | ${g.target} | ${g.met === undefined ? '–' : g.met ? 'yes' : 'no'}${g.note ? ` (${g.note})` : ''} |\n`);
    }
    report.benchSeconds = (performance.now() - started) / 1000;
    const outFile = path.resolve(process.env.SFT_BENCH_OUT ?? path.join(ROOT, '.artifacts', 'bench.json'));
    await fs.mkdir(path.dirname(outFile), { recursive: true });
    await fs.writeFile(outFile, JSON.stringify(report, null, 2) + '\n');
    process.stdout.write(`\nwrote ${outFile} (the benchmark took ${(report.benchSeconds / 60).toFixed(1)} min)\n`);
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
