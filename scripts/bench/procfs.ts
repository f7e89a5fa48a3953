/**
 * Measuring processes that are not Node (Python, OpenSSH) from outside, through /proc (Linux only):
 * CPU time (utime + stime, and cutime + cstime for the children a process has waited for) and
 * peak RSS (VmHWM) of a process and of every process below it.
 *
 * A sampler walks each watched tree every 100 ms and keeps, per process, the last CPU time and the
 * largest VmHWM seen. CPU spent in a process's last moments before it exits (at most one interval)
 * escapes the sampler, so its figures are lower bounds; where a process waits for its children, its
 * own cutime + cstime counts them exactly, and the larger of the two figures is reported.
 */
import { readFileSync, readdirSync } from 'node:fs';

const TICKS = 100; // USER_HZ, 100 on every Linux this runs on.

export interface Stat {
  ppid: number;
  /** utime + stime, seconds. */
  self: number;
  /** cutime + cstime: children waited for, seconds. */
  children: number;
}

export function readStat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: fields after it follow the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state); utime is field 14, so f[11].
  return { ppid: Number(f[1]), self: (Number(f[11]) + Number(f[12])) / TICKS, children: (Number(f[13]) + Number(f[14])) / TICKS };
}

/** VmRSS / VmHWM / … from /proc/<pid>/status, in bytes (undefined once the process is gone). */
export function statusBytes(pid: number, field: 'VmRSS' | 'VmHWM'): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/)) if (c) out.push(Number(c));
    } catch {
      // The task ended meanwhile.
    }
  }
  return out;
}

/** The process and everything below it, now. */
export function treeOf(pid: number): number[] {
  const out: number[] = [];
  const todo = [pid];
  while (todo.length > 0) {
    const p = todo.pop()!;
    out.push(p);
    todo.push(...childrenOf(p));
  }
  return out;
}

export interface SampledFigures {
  cpuSeconds: number;
  maxRssBytes: number;
  sampledCpuSeconds: number;
  waitedCpuSeconds?: number;
  processesSeen: number;
}

interface Seen {
  cpu: number;
  hwm: number;
}

/** Samples named process trees until stopped; figures per name. */
export class TreeSampler {
  private readonly seen = new Map<string, Map<number, Seen>>();
  private readonly baseline = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;

  /** `roots`: name → root pid. A root that is a long-running server counts from now on (its CPU so far is subtracted). */
  constructor(private readonly roots: Record<string, number>) {
    for (const [name, pid] of Object.entries(roots)) {
      this.seen.set(name, new Map());
      const s = readStat(pid);
      // Whatever the tree had used before the sampler started is not part of the measurement.
      this.baseline.set(name, s ? s.self + s.children + treeOf(pid).slice(1).reduce((n, p) => n + (readStat(p)?.self ?? 0), 0) : 0);
    }
    this.sample();
    this.timer = setInterval(() => this.sample(), 100);
  }

  /** Adds a root after the start (a client spawned later), counted from zero. */
  add(name: string, pid: number): void {
    (this.roots as Record<string, number>)[name] = pid;
    this.seen.set(name, new Map());
    this.baseline.set(name, 0);
    this.sample();
  }

  sample(): void {
    for (const [name, root] of Object.entries(this.roots)) {
      const map = this.seen.get(name)!;
      for (const pid of treeOf(root)) {
        const s = readStat(pid);
        if (!s) continue;
        const hwm = statusBytes(pid, 'VmHWM') ?? 0;
        const prev = map.get(pid);
        map.set(pid, { cpu: Math.max(prev?.cpu ?? 0, s.self), hwm: Math.max(prev?.hwm ?? 0, hwm) });
      }
    }
  }

  /**
   * Stops sampling. `rootTotals`: for roots whose own accounting is exact once their children are
   * waited for (a wrapper shell's cutime + cstime, a server's self + children), that figure.
   */
  stop(rootTotals: Record<string, number | undefined> = {}): Record<string, SampledFigures> {
    clearInterval(this.timer);
    this.sample();
    const out: Record<string, SampledFigures> = {};
    for (const [name, map] of this.seen) {
      const sampled = [...map.values()].reduce((n, s) => n + s.cpu, 0);
      const exact = rootTotals[name];
      const base = this.baseline.get(name) ?? 0;
      out[name] = {
        cpuSeconds: Math.max(0, Math.max(sampled, exact ?? 0) - base),
        // Both lower bounds, kept in bench.json to show how far apart they are.
        sampledCpuSeconds: Math.max(0, sampled - base),
        ...(exact === undefined ? {} : { waitedCpuSeconds: Math.max(0, exact - base) }),
        processesSeen: map.size,
        // Every process's own peak, summed: the tree's peak if they peak together, an upper bound otherwise.
        maxRssBytes: [...map.values()].reduce((n, s) => n + s.hwm, 0),
      };
    }
    return out;
  }
}

/** Self + children CPU of a live process (a server that reaps its per-connection children). */
export function totalCpu(pid: number): number | undefined {
  const s = readStat(pid);
  return s ? s.self + s.children : undefined;
}

