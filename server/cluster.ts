/**
 * The link between relay nodes: Socket.IO's sharded Redis adapter over two node-redis clients,
 * plus the one piece of shared state kept in Redis itself (the hourly byte budgets).
 *
 * Loaded only when a relay is given a Redis URL (`redis` in sft-relay): a single relay never
 * imports the adapter or the Redis client.
 *
 * Why the sharded adapter (Redis 7 sharded pub/sub, `subscriptionMode: 'dynamic'`) rather than the
 * classic pub/sub adapter or the Redis Streams adapter: every encrypted chunk (1 MiB by default) that goes
 * to a recipient on another node crosses Redis. The classic adapter publishes it on one channel
 * that every node subscribes to, so each node decodes every chunk of the cluster; the streams
 * adapter does the same and also keeps the last 10 000 messages in a stream (gigabytes of Redis
 * memory at this chunk size); the sharded adapter publishes a message for room `peer:<id>` on
 * that room's own channel, to which only the node holding that peer is subscribed. Measured
 * figures are in the README (Scaling out). It is also what Socket.IO's documentation recommends
 * for new deployments, and it works with the `redis` package only.
 */
import type { Logger } from 'pino';
import type { Namespace } from 'socket.io';

export interface ClusterLink {
  /** The adapter factory to hand to `io.adapter()`. */
  readonly adapter: (nsp: Namespace) => unknown;
  /** Whether both Redis connections are up (readiness). */
  ready(): boolean;
  /**
   * Takes `cost` from the token bucket `key` (at most `burst`, refilled at `perSecond`), kept in
   * Redis so that every node charges the same budget. Resolves false when it does not cover it.
   */
  takeBudget(key: string, cost: number, perSecond: number, burst: number): Promise<boolean>;
  close(): Promise<void>;
}

/** One token bucket per key, atomically, with Redis's clock so node clocks do not matter. */
const TAKE_BUDGET = `
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(v[1]) or burst
local at = tonumber(v[2]) or now
tokens = math.min(burst, tokens + (now - at) / 1000 * rate)
local ok = 0
if tokens >= cost then
  tokens = tokens - cost
  ok = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return ok
`;

/** Connects to Redis (failing if it cannot within `timeoutMs`) and builds the adapter. */
export async function connectCluster(url: string, log: Logger, timeoutMs = 10_000): Promise<ClusterLink> {
  const [{ createClient }, { createShardedAdapter }] = await Promise.all([import('redis'), import('@socket.io/redis-adapter')]);
  // A node that cannot reach Redis at start fails at once, with the cause; once connected, it
  // keeps reconnecting (with a capped back-off) for as long as Redis is away.
  let connected = false;
  const reconnectStrategy = (retries: number, cause: Error) => (connected ? Math.min(50 * 2 ** retries, 2000) : cause);
  const pub = createClient({ url, socket: { connectTimeout: timeoutMs, reconnectStrategy } });
  const sub = pub.duplicate();
  // node-redis reconnects on its own (and restores subscriptions); an unhandled 'error' would
  // crash the process, so errors are logged and readiness reports the outage.
  for (const [name, client] of [['publish', pub], ['subscribe', sub]] as const) {
    client.on('error', (error: Error) => log.warn({ err: error, connection: name }, 'redis connection error'));
  }
  try {
    await Promise.all([pub.connect(), sub.connect()]);
    connected = true;
  } catch (error) {
    pub.destroy();
    sub.destroy();
    throw error;
  }
  return {
    adapter: createShardedAdapter(pub, sub, { subscriptionMode: 'dynamic' }) as (nsp: Namespace) => unknown,
    ready: () => pub.isReady && sub.isReady,
    async takeBudget(key, cost, perSecond, burst) {
      const ok = await pub.sendCommand<number>(['EVAL', TAKE_BUDGET, '1', key, String(perSecond), String(burst), String(cost)]);
      return ok === 1;
    },
    async close() {
      // close() waits for pending commands, which never end while Redis is unreachable.
      const closed = Promise.allSettled([pub.close(), sub.close()]).then(() => true);
      const timeout = new Promise<false>((resolve) => setTimeout(resolve, 2000, false).unref());
      if (!(await Promise.race([closed, timeout]))) {
        pub.destroy();
        sub.destroy();
      }
    },
  };
}
