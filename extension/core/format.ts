/** The one place that formats sizes, rates and durations for people, and measures progress. */

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];

/** Decimal units (as Finder and most download UIs show them): 2.4 MB, 1.07 GB. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '?';
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 2 : value < 100 ? 1 : 0)} ${UNITS[unit]}`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** "in 4s (134 MB/s)", for the line that ends a transfer. */
export function timeAndRate(bytes: number, durationMs: number): string {
  const seconds = Math.max(durationMs / 1000, 0.001);
  return `in ${formatDuration(seconds)} (${formatRate(bytes / seconds)})`;
}

export interface Progress {
  readonly transferId: string;
  readonly bytes: number;
  readonly total: number;
  /** Bytes per second over the last few seconds. */
  readonly rate: number;
  /** Seconds left at the current rate; Infinity while the rate is unknown. */
  readonly eta: number;
}

/**
 * Turns byte counts into Progress events: rate over a sliding window of a few seconds, and at most
 * one event per `intervalMs` (the last one always gets through), so UIs need no throttling.
 */
export class ProgressMeter {
  private readonly samples: Array<{ at: number; bytes: number }> = [];
  private lastEmit = 0;

  constructor(
    private readonly transferId: string,
    private readonly total: number,
    private readonly listener: ((progress: Progress) => void) | undefined,
    private readonly intervalMs = 100,
    private readonly windowMs = 3000,
  ) {}

  update(bytes: number): void {
    if (!this.listener) return;
    const now = performance.now();
    const final = bytes >= this.total;
    if (!final && now - this.lastEmit < this.intervalMs) return;
    this.lastEmit = now;
    this.samples.push({ at: now, bytes });
    while (this.samples.length > 2 && now - this.samples[0]!.at > this.windowMs) this.samples.shift();
    const first = this.samples[0]!;
    const elapsed = (now - first.at) / 1000;
    const rate = elapsed > 0 ? (bytes - first.bytes) / elapsed : 0;
    const eta = rate > 0 ? (this.total - bytes) / rate : final ? 0 : Infinity;
    this.listener({ transferId: this.transferId, bytes, total: this.total, rate, eta });
  }
}

const SIZE_SUFFIXES: Record<string, number> = { '': 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40, ki: 2 ** 10, mi: 2 ** 20, gi: 2 ** 30, ti: 2 ** 40 };

/** Parses "500MB", "2GiB" (or "2Gi"), "1048576"; returns undefined when it is not a size. */
export function parseBytes(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const factor = match ? SIZE_SUFFIXES[match[2]!.toLowerCase()] : undefined;
  if (!match || factor === undefined) return undefined;
  const value = Math.floor(Number(match[1]) * factor);
  return Number.isSafeInteger(value) ? value : undefined;
}
