/**
 * A load balancer for tests: a TCP proxy that hands each new connection to the first backend
 * that accepts it, in the order given. When a relay node stops, its clients reconnect through the
 * same address and land on the next node, as they would behind a real balancer with health checks.
 * `moveTo(i)` cuts every connection and sends new ones to backend `i` first: a client whose network
 * dropped and that lands on another node although the first is alive.
 */
import net from 'node:net';

export interface Balancer {
  readonly url: string;
  moveTo(backend: number): void;
  close(): Promise<void>;
}

export async function startBalancer(backends: readonly string[]): Promise<Balancer> {
  let targets = backends.map((b) => new URL(b));
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  };
  const server = net.createServer((client) => {
    track(client);
    client.pause();
    const attempt = (i: number) => {
      if (i >= targets.length) {
        client.destroy();
        return;
      }
      const upstream = net.connect(Number(targets[i]!.port), targets[i]!.hostname);
      upstream.once('error', () => attempt(i + 1));
      upstream.once('connect', () => {
        track(upstream);
        upstream.removeAllListeners('error');
        for (const s of [client, upstream]) {
          s.on('error', () => {
            client.destroy();
            upstream.destroy();
          });
          s.on('close', () => {
            client.destroy();
            upstream.destroy();
          });
        }
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
    };
    attempt(0);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    moveTo(backend) {
      const all = backends.map((b) => new URL(b));
      targets = [all[backend]!, ...all.filter((_, i) => i !== backend)];
      for (const s of sockets) s.destroy();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
