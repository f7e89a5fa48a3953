/** What the benchmark's parts share: starting measured Node processes and reading their figures. */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
import { RELAY_NODE_FLAGS } from '../../server/heap';

export const ROOT = path.resolve(__dirname, '..');
export const DIST = path.join(ROOT, 'dist');
export const PROBE = path.join(ROOT, 'scripts', 'bench', 'probe.cjs');
export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;

export interface ProcessFigures {
  cpuSeconds: number;
  userSeconds?: number;
  systemSeconds?: number;
  /** CPU time after `markTransferStart` (relays only): what forwarding cost, without start-up. */
  cpuSecondsSinceMark?: number;
  maxRssBytes: number;
  /** V8's full (mark-compact) collections, and the time all collections took (Node processes only). */
  fullGcs?: number;
  gcSeconds?: number;
}

export interface Started {
  child: ChildProcess;
  lines: string[];
  exited: Promise<number | null>;
  probe: string;
}

/** A Node program with the probe preloaded: its CPU and peak RSS are written when it exits. */
export function startNode(work: string, label: string, script: string, args: string[], nodeFlags: readonly string[] = []): Started {
  const probe = path.join(work, `${label}-${crypto.randomBytes(4).toString('hex')}.json`);
  // SFT_BENCH_NODE_FLAGS (e.g. "--cpu-prof --cpu-prof-dir=DIR") passes flags to every measured process.
  const flags = (process.env.SFT_BENCH_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean);
  const child = spawn(process.execPath, [...nodeFlags, ...flags, '--require', PROBE, script, ...args], {
    env: { ...process.env, SFT_BENCH_PROBE: probe },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  for (const stream of [child.stdout!, child.stderr!]) readline.createInterface({ input: stream }).on('line', (l) => lines.push(l));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, lines, exited, probe };
}

/** An sft-relay, run with the Node flags every launcher of the relay gives it (server/heap.ts). */
export function startRelayNode(work: string, label: string, args: string[]): Started {
  return startNode(work, label, path.join(DIST, 'relay.js'), args, RELAY_NODE_FLAGS);
}

export async function waitForLine(s: Started, pattern: RegExp): Promise<RegExpMatchArray> {
  for (let i = 0; i < 600; i++) {
    for (const line of s.lines) {
      const m = pattern.exec(line);
      if (m) return m;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${pattern}:\n${s.lines.join('\n')}`);
}

/**
 * Tells a long-lived process (a relay) that the measured transfer starts now; its probe then also
 * reports the CPU time spent from here on. Waits a moment so the signal lands before the transfer.
 */
export async function markTransferStart(...started: Started[]): Promise<void> {
  for (const s of started) s.child.kill('SIGUSR2');
  await new Promise((r) => setTimeout(r, 50));
}

export async function finish(named: Record<string, Started>): Promise<Record<string, ProcessFigures>> {
  const out: Record<string, ProcessFigures> = {};
  for (const [name, s] of Object.entries(named)) {
    const code = await s.exited;
    if (code !== 0) throw new Error(`${name} exited with ${code}:\n${s.lines.slice(-10).join('\n')}`);
    out[name] = JSON.parse(await fs.readFile(s.probe, 'utf8')) as ProcessFigures;
    if (process.env.SFT_BENCH_VERBOSE) {
      const f = out[name];
      process.stdout.write(`  ${name}: user ${f.userSeconds?.toFixed(2)} s, system ${f.systemSeconds?.toFixed(2)} s, peak RSS ${(f.maxRssBytes / MiB).toFixed(0)} MiB${f.fullGcs === undefined ? '' : `, ${f.fullGcs} full GCs, ${f.gcSeconds!.toFixed(2)} s in GC`}\n`);
    }
  }
  return out;
}

/** `size` bytes of random data (AES-CTR keystream: fast, and incompressible). */
export async function randomFile(file: string, size: number): Promise<void> {
  const handle = await fs.open(file, 'w');
  const cipher = crypto.createCipheriv('aes-256-ctr', crypto.randomBytes(32), crypto.randomBytes(16));
  for (let done = 0; done < size; done += 8 * MiB) await handle.write(cipher.update(Buffer.alloc(Math.min(8 * MiB, size - done))));
  await handle.close();
}

export const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
