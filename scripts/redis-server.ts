/**
 * A real `redis-server` on a free loopback port, with nothing saved to disk, for the multi-node
 * tests and the benchmark. A missing redis-server is an error: the tests fail, not skip (CI
 * installs it, .ci/run).
 */
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { freePort } from './free-port';

export interface RedisServer {
  readonly url: string;
  readonly pid: number;
  /** Redis's INFO section, as key → value. */
  info(section: string): Promise<Record<string, string>>;
  stop(): Promise<void>;
}

/** Starts one on `port`, or on a free port. */
export async function startRedis(port?: number): Promise<RedisServer> {
  const found = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (found.error || found.status !== 0) {
    throw new Error('redis-server is not installed (Debian: apt-get install redis-server); the multi-node tests need a real one.');
  }
  port ??= await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => lines.push(...d.split('\n')));
  child.stderr.setEncoding('utf8').on('data', (d: string) => lines.push(...d.split('\n')));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  for (let waited = 0; !lines.some((l) => l.includes('Ready to accept connections')); waited += 20) {
    if (waited > 10_000 || child.exitCode !== null) throw new Error(`redis-server did not start:\n${lines.join('\n')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid!,
    info: async (section) => parseInfo(await command(port, `INFO ${section}`)),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** One inline command over RESP, read until the bulk reply is complete. */
function command(port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(`${line}\r\n`));
    let data = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      data += d;
      const m = /^\$(\d+)\r\n/.exec(data);
      if (m && Buffer.byteLength(data) >= m[0].length + Number(m[1]) + 2) {
        socket.end();
        resolve(data.slice(m[0].length));
      }
    });
    socket.on('error', reject);
  });
}

function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}
