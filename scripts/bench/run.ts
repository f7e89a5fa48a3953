/**
 * `npm run bench`: moves one file of random data (1 GiB by default) from one client process to
 * another through a relay process on this machine, for each path below, several times, and
 * reports the medians: throughput, CPU seconds per GiB (all processes, and the relay alone) and
 * peak RSS per process. The baseline runs in the same session, so ratios hold on a noisy machine.
 *
 *   tcp-relay   plain TCP relay, no encryption (scripts/bench/tcp-relay.ts)
 *   sft         sft-relay with sft send / sft receive: end-to-end encrypted, full protocol
 *
 * Environment: SFT_BENCH_MB (default 1024), SFT_BENCH_RUNS (default 3),
 * SFT_BENCH_OUT (default .artifacts/bench.json).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { formatBytes } from '../../extension/core/format';
import { sha256File } from '../hash';

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

    const results: Record<string, RunFigures[]> = { 'tcp-relay': [], sft: [] };
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
      process.stdout.write(`run ${run + 1}/${runs}: tcp-relay ${(size / 1e6 / results['tcp-relay']!.at(-1)!.seconds).toFixed(0)} MB/s, sft ${(size / 1e6 / results.sft!.at(-1)!.seconds).toFixed(0)} MB/s\n`);
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
            relayCpuSecondsPerGiB: median(list.map((r) => r.processes.relay!.cpuSeconds / gib)),
            peakRssMiB: Object.fromEntries(names.map((p) => [p, median(list.map((r) => r.processes[p]!.maxRssBytes / 2 ** 20))])),
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
      process.stdout.write(`| ${name} | ${s.mbPerSecond.toFixed(0)} | ${s.cpuSecondsPerGiB.toFixed(1)} | ${s.relayCpuSecondsPerGiB.toFixed(1)} | ${rss.relay!.toFixed(0)} / ${rss.sender!.toFixed(0)} / ${rss.receiver!.toFixed(0)} |\n`);
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
