/**
 * `npx tsx scripts/bench/adapters.ts [MB]`: how Socket.IO's Redis adapters carry this relay's
 * traffic between two nodes. One process holds two Socket.IO servers on one redis-server started
 * for each adapter, a sender client on the first and a receiver on the second; 256 KiB binary
 * chunks go sender → node 1 → room `peer:r` (through Redis) → node 2 → receiver, with a window of
 * 16 chunks and acknowledgements coming back as server-side events, as in the relay. It prints MB/s,
 * the process's CPU and Redis's CPU per GiB, and Redis's peak memory. It measures the adapters
 * alone (no encryption, no protocol checks); the README's "Scaling out" quotes it.
 *
 * `--bystander` adds a third node with a client of its own that takes no part: what a node pays
 * for traffic between two others (with the classic and streams adapters it receives every chunk).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server } from 'socket.io';
import { io as connect, type Socket } from 'socket.io-client';
import { createClient } from 'redis';
import { createAdapter, createShardedAdapter } from '@socket.io/redis-adapter';
import { createAdapter as createStreamsAdapter } from '@socket.io/redis-streams-adapter';
import { startRedis, type RedisServer } from '../redis-server';

const CHUNK = 262_144 + 16;
const WINDOW = 16;

type Kind = 'classic' | 'sharded' | 'streams';

async function measure(kind: Kind, megabytes: number, redis: RedisServer, bystander: boolean) {
  const clients: Array<{ close(): Promise<void> }> = [];
  const servers: Server[] = [];
  const node = async () => {
    const pub = createClient({ url: redis.url });
    const sub = pub.duplicate();
    clients.push(pub, sub);
    await Promise.all([pub.connect(), sub.connect()]);
    const adapter = kind === 'classic' ? createAdapter(pub, sub) : kind === 'sharded' ? createShardedAdapter(pub, sub, { subscriptionMode: 'dynamic' }) : createStreamsAdapter(pub);
    const server = http.createServer();
    const io = new Server(server, { transports: ['websocket'], maxHttpBufferSize: 2 ** 21, perMessageDeflate: false, adapter: adapter as never });
    servers.push(io);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { io, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
  };
  const one = await node();
  const two = await node();
  const idle: Socket[] = [];
  if (bystander) {
    const three = await node();
    three.io.on('connection', (s) => void s.join('peer:x'));
    idle.push(connect(three.url, { transports: ['websocket'] }));
  }
  one.io.on('connection', (s) => {
    void s.join('peer:s');
    s.on('chunk', (i: number, data: Buffer) => one.io.to('peer:r').emit('chunk', i, data));
  });
  two.io.on('connection', (s) => {
    void s.join('peer:r');
    s.on('ack', (i: number) => two.io.serverSideEmit('ack', i));
  });
  one.io.on('ack', (i: number) => one.io.local.to('peer:s').emit('ack', i));
  const sender: Socket = connect(one.url, { transports: ['websocket'] });
  const receiver: Socket = connect(two.url, { transports: ['websocket'] });
  await Promise.all([sender, receiver, ...idle].map((c) => new Promise((resolve) => c.on('connect', () => resolve(undefined)))));
  await new Promise((r) => setTimeout(r, 300)); // Subscriptions settle.
  const total = Math.ceil((megabytes * 2 ** 20) / 262_144);
  const chunk = Buffer.alloc(CHUNK, 1);
  const cpu = async () => {
    const info = await redis.info('cpu');
    return Number(info.used_cpu_sys) + Number(info.used_cpu_user);
  };
  const redisBefore = await cpu();
  const cpuBefore = process.cpuUsage();
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let next = 0;
    let acked = 0;
    const pump = () => {
      while (next < total && next < acked + WINDOW) sender.emit('chunk', next++, chunk);
    };
    sender.on('ack', (i: number) => {
      acked = i + 1;
      if (acked === total) resolve();
      else pump();
    });
    receiver.on('chunk', (i: number) => receiver.emit('ack', i));
    pump();
  });
  const seconds = (performance.now() - t0) / 1000;
  const used = process.cpuUsage(cpuBefore);
  const gib = (total * 262_144) / 2 ** 30;
  const memory = await redis.info('memory');
  const result = {
    adapter: kind,
    nodes: bystander ? 3 : 2,
    mbPerSecond: Math.round((total * 262_144) / 1e6 / seconds),
    processCpuSecondsPerGiB: +((used.user + used.system) / 1e6 / gib).toFixed(2),
    redisCpuSecondsPerGiB: +(((await cpu()) - redisBefore) / gib).toFixed(2),
    redisUsedMemoryPeakMiB: +(Number(memory.used_memory_peak) / 2 ** 20).toFixed(1),
  };
  for (const c of [sender, receiver, ...idle]) c.close();
  for (const io of servers) await new Promise((resolve) => io.close(() => resolve(undefined)));
  for (const c of clients) await c.close().catch(() => undefined);
  return result;
}

async function main() {
  const megabytes = Number(process.argv.slice(2).find((a) => /^\d+$/.test(a)) ?? 512);
  const bystander = process.argv.includes('--bystander');
  for (const kind of ['sharded', 'classic', 'streams'] as const) {
    const redis = await startRedis();
    try {
      process.stdout.write(`${JSON.stringify(await measure(kind, megabytes, redis, bystander))}\n`);
    } finally {
      await redis.stop();
    }
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`adapter benchmark failed: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
