/**
 * A TCP proxy that sits between clients and a relay and shows every byte that crosses it to a
 * callback. The demo and the confidentiality tests use it to look at exactly what the relay
 * receives and sends, at the socket level, with no hook inside the relay.
 */
import net from 'node:net';

export type TapDirection = 'to-relay' | 'from-relay';

export interface TapProxy {
  readonly url: string;
  /** Cuts every connection through the tap, as a network failure would; new ones still pass. */
  cut(): void;
  /** Down: cuts every connection and refuses new ones, until up again (a longer outage). */
  setDown(down: boolean): void;
  close(): Promise<void>;
}

/** `connection` numbers the connections through the tap (0, 1, …), so each one's bytes can be told apart. */
export async function startTapProxy(relayUrl: string, onData: (direction: TapDirection, data: Buffer, connection: number) => void): Promise<TapProxy> {
  const target = new URL(relayUrl);
  const sockets = new Set<net.Socket>();
  let down = false;
  let connections = 0;
  const server = net.createServer((client) => {
    if (down) return void client.destroy();
    const connection = connections++;
    const upstream = net.connect(Number(target.port), target.hostname.replace(/^\[|\]$/g, ''));
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (data: Buffer) => onData('to-relay', data, connection));
    upstream.on('data', (data: Buffer) => onData('from-relay', data, connection));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    cut: () => {
      for (const s of sockets) s.destroy();
    },
    setDown: (value) => {
      down = value;
      if (down) for (const s of sockets) s.destroy();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * Looks for byte strings in a stream without keeping the stream: it keeps only the last
 * (longest needle - 1) bytes, so a needle split across two reads is still found.
 */
export class NeedleScanner {
  readonly found = new Set<string>();
  bytes = 0;
  private tail = Buffer.alloc(0);
  private readonly keep: number;

  constructor(private readonly needles: ReadonlyMap<string, Buffer>) {
    this.keep = Math.max(0, ...[...needles.values()].map((n) => n.length - 1));
  }

  feed(data: Buffer): void {
    this.bytes += data.length;
    const window = Buffer.concat([this.tail, data]);
    for (const [label, needle] of this.needles) if (window.includes(needle)) this.found.add(label);
    this.tail = window.subarray(Math.max(0, window.length - this.keep));
  }
}
