/**
 * `npm run bench`: moves one file of random data (1 GiB by default) from one client process to
 * another through a relay process on this machine, for each path below, several times, and
 * reports the medians: throughput, CPU seconds per GiB (all processes, and the relay alone) and
 * peak RSS per process. The baseline runs in the same session, so ratios hold on a noisy machine.
 *
 *   tcp-relay   plain TCP relay, no encryption (scripts/bench/tcp-relay.ts)
 *   sft         sft-relay with sft send / sft receive: end-to-end encrypted, full protocol
 *   sft-2-nodes the same, with the sender and the receiver on two sft-relay nodes joined through
 *               a redis-server started for each run (skipped when redis-server is missing);
 *               also reports Redis's CPU and its peak memory (INFO memory used_memory_peak)
 *
 * Environment: SFT_BENCH_MB (default 1024), SFT_BENCH_RUNS (default 3),
 * SFT_BENCH_OUT (default .artifacts/bench.json).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { formatBytes } from '../../extension/core/format';
import { sha256File } from '../hash';
import { startRedis } from '../redis-server';

const ROOT = path.resolve(__dirname, '..');
const DIST = path.join(ROOT, 'dist');
const PROBE = path.join(ROOT, 'scripts', 'bench', 'probe.cjs');
const GiB = 1024 ** 3;

interface ProcessFigures {
  cpuSeconds: number;
  maxRssBytes: number;
}

interface RunFigures {
  seconds: number;
  processes: Record<string, ProcessFigures>;
  /** Two-node runs: Redis's CPU seconds during the run and its peak memory. */
  redis?: { cpuSeconds: number; usedMemoryPeakBytes: number };
}

interface Started {
  child: ChildProcess;
  lines: string[];
  exited: Promise<number | null>;
  probe: string;
}

function startNode(work: string, label: string, script: string, args: string[]): Started {
  const probe = path.join(work, `${label}-${crypto.randomBytes(4).toString('hex')}.json`);
  const child = spawn(process.execPath, ['--require', PROBE, script, ...args], {
    env: { ...process.env, SFT_BENCH_PROBE: probe },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  for (const stream of [child.stdout!, child.stderr!]) readline.createInterface({ input: stream }).on('line', (l) => lines.push(l));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, lines, exited, probe };
}

async function waitForLine(s: Started, pattern: RegExp): Promise<RegExpMatchArray> {
  for (let i = 0; i < 600; i++) {
    for (const line of s.lines) {
      const m = pattern.exec(line);
      if (m) return m;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${pattern}:\n${s.lines.join('\n')}`);
}

async function finish(named: Record<string, Started>): Promise<Record<string, ProcessFigures>> {
  const out: Record<string, ProcessFigures> = {};
  for (const [name, s] of Object.entries(named)) {
    const code = await s.exited;
    if (code !== 0) throw new Error(`${name} exited with ${code}:\n${s.lines.slice(-10).join('\n')}`);
    out[name] = JSON.parse(await fs.readFile(s.probe, 'utf8')) as ProcessFigures;
  }
  return out;
}

async function runTcp(work: string, file: string, out: string): Promise<RunFigures> {
  const script = path.join(DIST, 'bench-tcp-relay.js');
  const relay = startNode(work, 'relay', script, ['relay']);
  const [port] = await waitForLine(relay, /^\d+$/);
  const receiver = startNode(work, 'receiver', script, ['recv', port!, out]);
  await new Promise((r) => setTimeout(r, 200)); // The receiver registers first.
  const t0 = performance.now();
  const sender = startNode(work, 'sender', script, ['send', port!, file]);
  const processes = await finish({ sender, receiver, relay });
  return { seconds: (performance.now() - t0) / 1000, processes };
}

async function runSft(work: string, file: string, outDir: string, run: number): Promise<RunFigures> {
  const relay = startNode(work, 'relay', path.join(DIST, 'relay.js'), ['--port', '0', '--log-level', 'warn']);
  const [, url] = await waitForLine(relay, /^sft-relay listening on (\S+)$/);
  const common = ['--relay', url!, '--identity'];
  const receiver = startNode(work, 'receiver', path.join(DIST, 'cli.js'), ['receive', '--out', outDir, '--yes', '--once', '--name', `recv${run}`, ...common, path.join(work, 'id-recv')]);
  await waitForLine(receiver, /Waiting for files/);
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
    const relay = startNode(work, 'relay', path.join(DIST, 'relay.js'), nodeArgs);
    const relay2 = startNode(work, 'relay2', path.join(DIST, 'relay.js'), nodeArgs);
    const [, senderUrl] = await waitForLine(relay, /^sft-relay listening on (\S+)$/);
    const [, receiverUrl] = await waitForLine(relay2, /^sft-relay listening on (\S+)$/);
    const identity = ['--identity'];
    const receiver = startNode(work, 'receiver', path.join(DIST, 'cli.js'), ['receive', '--out', outDir, '--yes', '--once', '--name', `recv2n${run}`, '--relay', receiverUrl!, ...identity, path.join(work, 'id-recv')]);
    await waitForLine(receiver, /Waiting for files/);
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

function haveRedis(): boolean {
  return spawnSync('redis-server', ['--version']).status === 0;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

async function main() {
  const megabytes = Number(process.env.SFT_BENCH_MB ?? 1024);
  const runs = Number(process.env.SFT_BENCH_RUNS ?? 3);
  const size = megabytes * 1024 * 1024;
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-bench-'));
  try {
    const file = path.join(work, 'payload.bin');
    process.stdout.write(`generating ${formatBytes(size)} of random data…\n`);
    const handle = await fs.open(file, 'w');
    const cipher = crypto.createCipheriv('aes-256-ctr', crypto.randomBytes(32), crypto.randomBytes(16));
    for (let done = 0; done < size; done += 8 * 1024 * 1024) await handle.write(cipher.update(Buffer.alloc(Math.min(8 * 1024 * 1024, size - done))));
    await handle.close();
    const expected = await sha256File(file);

    const twoNodes = haveRedis();
    if (!twoNodes) process.stdout.write('redis-server not found: skipping the two-node path (apt-get install redis-server)\n');
    const results: Record<string, RunFigures[]> = { 'tcp-relay': [], sft: [], ...(twoNodes ? { 'sft-2-nodes': [] } : {}) };
    for (let run = 0; run < runs; run++) {
      // Alternate the paths so drift on the machine touches both alike.
      const tcpOut = path.join(work, 'tcp-out.bin');
      results['tcp-relay']!.push(await runTcp(work, file, tcpOut));
      if (run === 0 && (await sha256File(tcpOut)) !== expected) throw new Error('tcp-relay corrupted the file');
      await fs.rm(tcpOut);
      const sftOut = path.join(work, `sft-out-${run}`);
      results.sft!.push(await runSft(work, file, sftOut, run));
      if (run === 0 && (await sha256File(path.join(sftOut, 'payload.bin'))) !== expected) throw new Error('sft corrupted the file');
      await fs.rm(sftOut, { recursive: true });
      if (twoNodes) {
        const clusterOut = path.join(work, `sft-2-nodes-out-${run}`);
        results['sft-2-nodes']!.push(await runSftTwoNodes(work, file, clusterOut, run));
        if (run === 0 && (await sha256File(path.join(clusterOut, 'payload.bin'))) !== expected) throw new Error('sft through two nodes corrupted the file');
        await fs.rm(clusterOut, { recursive: true });
      }
      const rates = Object.entries(results).map(([name, list]) => `${name} ${(size / 1e6 / list.at(-1)!.seconds).toFixed(0)} MB/s`);
      process.stdout.write(`run ${run + 1}/${runs}: ${rates.join(', ')}\n`);
    }

    const summary = Object.fromEntries(
      Object.entries(results).map(([name, list]) => {
        const names = Object.keys(list[0]!.processes);
        const gib = size / GiB;
        return [
          name,
          {
            mbPerSecond: median(list.map((r) => size / 1e6 / r.seconds)),
            cpuSecondsPerGiB: median(list.map((r) => Object.values(r.processes).reduce((n, p) => n + p.cpuSeconds, 0) / gib)),
            // Every relay node together (one, or two joined through Redis); Redis is reported apart.
            relayCpuSecondsPerGiB: median(list.map((r) => names.filter((p) => p.startsWith('relay')).reduce((n, p) => n + r.processes[p]!.cpuSeconds, 0) / gib)),
            cpuSecondsPerGiBByProcess: Object.fromEntries(names.map((p) => [p, median(list.map((r) => r.processes[p]!.cpuSeconds / gib))])),
            peakRssMiB: Object.fromEntries(names.map((p) => [p, median(list.map((r) => r.processes[p]!.maxRssBytes / 2 ** 20))])),
            ...(list[0]!.redis
              ? {
                  redisCpuSecondsPerGiB: median(list.map((r) => r.redis!.cpuSeconds / gib)),
                  redisUsedMemoryPeakMiB: median(list.map((r) => r.redis!.usedMemoryPeakBytes / 2 ** 20)),
                }
              : {}),
            runs: list,
          },
        ];
      }),
    );
    const sft = summary.sft!;
    const tcp = summary['tcp-relay']!;
    const report = {
      date: new Date().toISOString(),
      machine: { cpu: os.cpus()[0]?.model, cores: os.cpus().length, memoryGiB: Math.round(os.totalmem() / GiB), node: process.version, platform: `${os.platform()} ${os.release()}` },
      fileBytes: size,
      runs,
      ratioToTcpRelay: sft.mbPerSecond / tcp.mbPerSecond,
      results: summary,
    };
    process.stdout.write(`\n${formatBytes(size)}, median of ${runs}, ${report.machine.cores} × ${report.machine.cpu}, Node ${process.version}\n\n`);
    process.stdout.write('| path | MB/s | CPU s per GiB (all) | relay CPU s per GiB | peak RSS MiB (relay / sender / receiver) |\n|---|---|---|---|---|\n');
    for (const [name, s] of Object.entries(summary)) {
      const rss = s.peakRssMiB as Record<string, number>;
      const relays = Object.keys(rss).filter((p) => p.startsWith('relay')).map((p) => rss[p]!.toFixed(0)).join(' + ');
      process.stdout.write(`| ${name} | ${s.mbPerSecond.toFixed(0)} | ${s.cpuSecondsPerGiB.toFixed(1)} | ${s.relayCpuSecondsPerGiB.toFixed(1)} | ${relays} / ${rss.sender!.toFixed(0)} / ${rss.receiver!.toFixed(0)} |\n`);
    }
    const cluster = summary['sft-2-nodes'];
    if (cluster) {
      const byProcess = Object.entries(cluster.cpuSecondsPerGiBByProcess).map(([p, v]) => `${p} ${v.toFixed(1)}`);
      process.stdout.write(`\nsft-2-nodes: CPU s per GiB by process: ${byProcess.join(', ')}, redis ${cluster.redisCpuSecondsPerGiB!.toFixed(1)} (not in the totals); Redis used_memory_peak ${cluster.redisUsedMemoryPeakMiB!.toFixed(1)} MiB\n`);
    }
    process.stdout.write(`\nsft reaches ${(report.ratioToTcpRelay * 100).toFixed(0)}% of the plain TCP relay.\n`);
    const outFile = path.resolve(process.env.SFT_BENCH_OUT ?? path.join(ROOT, '.artifacts', 'bench.json'));
    await fs.mkdir(path.dirname(outFile), { recursive: true });
    await fs.writeFile(outFile, JSON.stringify(report, null, 2) + '\n');
    process.stdout.write(`wrote ${outFile}\n`);
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
