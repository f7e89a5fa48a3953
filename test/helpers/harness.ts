/**
 * Test harness: a real relay on port 0, real socket.io-client peers with fresh identities, and
 * temporary folders on disk. Everything started here is torn down by `close()`.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { createRelay, type Relay, type RelayOptions } from '../../server/relay';
import { RelayClient } from '../../extension/core/client';
import { Identity } from '../../extension/core/crypto/identity';
import { Inbox, type IncomingOffer } from '../../extension/core/transfer/receiver';
import { sendFiles } from '../../extension/core/transfer/sender';

export interface Peer {
  readonly client: RelayClient;
  readonly inbox: Inbox;
  readonly identity: Identity;
  readonly name: string;
  /** Resolves with the next offer this peer receives. */
  nextOffer(): Promise<IncomingOffer>;
}

export class Harness {
  relay: Relay | undefined;
  url!: string;
  private readonly peers: Peer[] = [];
  private readonly dirs: string[] = [];

  static async start(options: RelayOptions = {}): Promise<Harness> {
    const h = new Harness();
    h.relay = createRelay(options);
    h.url = await h.relay.start();
    return h;
  }

  /** Peers and folders for a relay running elsewhere (a relay process). */
  static attach(url: string): Harness {
    const h = new Harness();
    h.url = url;
    return h;
  }

  async peer(name: string, extra: { token?: string; identity?: Identity; ca?: string; url?: string; reconnect?: boolean } = {}): Promise<Peer> {
    const identity = extra.identity ?? Identity.generate();
    const client = new RelayClient({ url: extra.url ?? this.url, identity, name, reconnect: extra.reconnect ?? false, ...(extra.token ? { token: extra.token } : {}), ...(extra.ca ? { ca: extra.ca } : {}) });
    const inbox = new Inbox(client);
    const peer: Peer = {
      client,
      inbox,
      identity,
      name,
      nextOffer: () => new Promise((resolve) => inbox.once('offer', resolve)),
    };
    this.peers.push(peer);
    await client.connect();
    return peer;
  }

  /** Waits until `peer` sees every one of `names` online. */
  async until(check: () => boolean, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      if (Date.now() > deadline) throw new Error('timed out waiting for a condition');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** `from` sends `to` a file of `size` random bytes, which must arrive byte-identical and alone. */
  async sendAndVerify(from: Peer, to: Peer, size: number): Promise<void> {
    const name = `${from.name}-to-${to.name}.bin`;
    const file = path.join(await this.tempDir(), name);
    const out = await this.tempDir();
    const sum = await writeRandomFile(file, size, from.name);
    const received = to.nextOffer().then((o) => o.accept({ directory: out }));
    const sent = await sendFiles(from.client, { paths: [file], to: [from.client.findPeer(to.name)] });
    assert.deepEqual(sent.recipients, [{ peerId: to.identity.peerId, outcome: 'done' }]);
    await received;
    assert.equal(await sha256File(path.join(out, name)), sum);
    assert.deepEqual(await listTree(out), [name]);
  }

  async tempDir(label = 'sft-test-'): Promise<string> {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), label));
    this.dirs.push(dir);
    return dir;
  }

  async close(): Promise<void> {
    for (const p of this.peers) {
      p.inbox.dispose();
      p.client.close();
    }
    await this.relay?.stop();
    await Promise.all(this.dirs.map((d) => fs.rm(d, { recursive: true, force: true })));
  }
}

/** Writes `size` bytes of deterministic pseudo-random data (streamed, so any size works). */
export async function writeRandomFile(file: string, size: number, seed = 'seed'): Promise<string> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const handle = await fs.open(file, 'w');
  const hash = crypto.createHash('sha256');
  try {
    const block = 4 * 1024 * 1024;
    let counter = 0;
    for (let written = 0; written < size; ) {
      const n = Math.min(block, size - written);
      const key = crypto.createHash('sha256').update(`${seed}:${counter++}`).digest();
      const data = crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(n));
      hash.update(data);
      await handle.write(data);
      written += n;
    }
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
}

import { sha256File } from '../../scripts/hash';
export { sha256File };

/** Every file under `dir`, relative, "/"-separated, sorted. */
export async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, rel: string) => {
    for (const e of await fs.readdir(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        out.push(`${r}/`);
        await walk(path.join(d, e.name), r);
      } else out.push(r);
    }
  };
  await walk(dir, '');
  return out.sort();
}
