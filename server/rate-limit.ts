/** A token bucket: `burst` tokens, refilled at `perSecond`. Cheap enough to sit on every message. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.last = now();
  }

  take(cost = 1): boolean {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
    if (this.tokens < cost) return false;
    this.tokens -= cost;
    return true;
  }
}

/** One bucket per key (a client address), forgetting keys that have been idle. */
export class KeyedRateLimiter {
  private readonly buckets = new Map<string, { bucket: TokenBucket; seen: number }>();

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly maxKeys = 100_000,
  ) {}

  take(key: string, cost = 1): boolean {
    const now = Date.now();
    let entry = this.buckets.get(key);
    if (!entry) {
      if (this.buckets.size >= this.maxKeys) this.sweep(now);
      entry = { bucket: new TokenBucket(this.perSecond, this.burst), seen: now };
      this.buckets.set(key, entry);
    }
    entry.seen = now;
    this.buckets.delete(key); // Re-inserted last: the map stays in order of last use.
    this.buckets.set(key, entry);
    return entry.bucket.take(cost);
  }

  private sweep(now: number): void {
    // A bucket idle for the time it takes to refill completely holds no information.
    const idle = (this.burst / this.perSecond) * 1000;
    for (const [key, entry] of this.buckets) if (now - entry.seen > idle) this.buckets.delete(key);
    // Still full: forget the least recently seen tenth (Map order is insertion order, and take()
    // re-inserts on use), never everyone at once, which would hand every flooder a fresh burst.
    if (this.buckets.size >= this.maxKeys) {
      const drop = Math.ceil(this.maxKeys / 10);
      for (const key of [...this.buckets.keys()].slice(0, drop)) this.buckets.delete(key);
    }
  }
}
