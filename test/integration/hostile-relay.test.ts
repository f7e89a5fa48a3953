/**
 * A hostile relay. The relays here are stand-ins written for the tests (real Socket.IO servers on
 * port 0 speaking the wire protocol), because the real relay will not misbehave on purpose; the
 * clients, keys and files are real.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import crypto from 'node:crypto';
import { Server, type Socket } from 'socket.io';
import { RelayClient } from '../../extension/core/client';
import { Identity, safetyNumber } from '../../extension/core/crypto/identity';
import { TrustBook } from '../../extension/core/trust';
import { Inbox, type IncomingOffer } from '../../extension/core/transfer/receiver';
import os from 'node:os';
import { PROTOCOL_VERSION, SOCKET_PATH, peerIdentity, peerInfo, type PeerInfo } from '../../extension/core/protocol';
import type { SftError } from '../../extension/core/errors';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Harness, writeRandomFile, type Peer } from '../helpers/harness';
import { startHostileRelay, type HostileRelay, type Tampering } from '../helpers/hostile-relay';
import { sendFiles } from '../../extension/core/transfer/sender';

/** A stand-in relay that sends a challenge and answers each `hello` as `onHello` says. */
async function standInRelay(onHello: (socket: Socket, reply: (r: unknown) => void) => void) {
  const server = http.createServer();
  const io = new Server(server, { path: SOCKET_PATH, transports: ['websocket'] });
  io.on('connection', (socket) => {
    socket.emit('challenge', { v: PROTOCOL_VERSION, relayId: 'evil', nonce: crypto.randomBytes(32).toString('base64url'), window: 4, maxChunkSize: 65536, maxFileSize: null });
    socket.on('hello', (_hello: unknown, reply: (r: unknown) => void) => onHello(socket, reply));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise<void>((r) => io.close(() => r())) };
}

function hostileRelay(listing: PeerInfo[], joinedLater: PeerInfo[]) {
  return standInRelay((socket, reply) => {
    reply({ ok: true, peers: listing });
    for (const peer of joinedLater) socket.emit('peer.joined', peer);
  });
}

test('a relay that pairs a known peer id with other keys is caught: the peer is dropped, never shown', async () => {
  const bob = Identity.generate();
  const carol = Identity.generate();
  const mallory = Identity.generate();
  // Bob's id (which Alice may have verified) with Mallory's keys, in the list and in a later join.
  const swapped = (name: string, victim: Identity): PeerInfo => ({ ...peerInfo(mallory, name), peerId: victim.peerId });
  const relay = await hostileRelay([swapped('bob', bob), peerInfo(carol, 'carol')], [swapped('bob-again', carol)]);
  const alice = new RelayClient({ url: relay.url, identity: Identity.generate(), name: 'alice', reconnect: false });
  const warnings: SftError[] = [];
  alice.on('warning', (w) => warnings.push(w));
  try {
    await alice.connect();
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual([...alice.peers.keys()], [carol.peerId]);
    assert.equal(alice.peers.get(carol.peerId)!.name, 'carol', 'the genuine listing survives');
    assert.equal(warnings.length, 2);
    assert.ok(warnings.every((w) => w.code === 'BAD_SIGNATURE'));
    assert.throws(() => alice.findPeer('bob'), { code: 'PEER_OFFLINE' });
  } finally {
    alice.close();
    await relay.close();
  }
});

describe('a relay that tampers with the stream is caught; nothing is presented as complete', () => {
  let relay: HostileRelay;
  let h: Harness;
  let alice: Peer;
  let bob: Peer;
  before(async () => {
    relay = await startHostileRelay();
    h = Harness.attach(relay.url);
    alice = await h.peer('alice');
    bob = await h.peer('bob');
    await h.until(() => alice.client.peers.has(bob.identity.peerId));
  });
  after(async () => {
    await h.close();
    await relay.close();
  });

  /** Sends 10 chunks of 1 KiB through the relay with `tampering`; returns both sides' outcomes. */
  async function attempt(tampering: Tampering) {
    relay.tampering = tampering;
    const src = await h.tempDir();
    const out = await h.tempDir();
    const file = path.join(src, 'ten-chunks.bin');
    await writeRandomFile(file, 10 * 1024 - 7);
    const received = bob.nextOffer().then((o) => o.accept({ directory: out, stallTimeoutMs: 1500 }));
    received.catch(() => undefined);
    const sent = await sendFiles(alice.client, { paths: [file], to: [alice.client.findPeer('bob')], chunkSize: 1024, stallTimeoutMs: 3000 });
    const outcome = await received.then(
      () => 'complete',
      (error: SftError) => error.code,
    );
    relay.tampering = {};
    return { outcome, sent: sent.recipients[0]!.outcome, files: await fs.readdir(out) };
  }

  const cases: Array<[string, Tampering, string]> = [
    ['a flipped bit in a chunk', { chunk: (_t, i, d, emit) => emit(i, i === 3 ? flip(d, 100) : d) }, 'INTEGRITY'],
    ['a dropped chunk', { chunk: (_t, i, d, emit) => i !== 4 && emit(i, d) }, 'INTEGRITY'],
    ['a dropped chunk, the rest relabelled to hide the gap', { chunk: (_t, i, d, emit) => i !== 4 && emit(i > 4 ? i - 1 : i, d) }, 'INTEGRITY'],
    ['two chunks swapped', swapChunks(2, 3), 'INTEGRITY'],
    ['a duplicated chunk', { chunk: (_t, i, d, emit) => (emit(i, d), i === 2 && emit(3, d)) }, 'INTEGRITY'],
    ['a withheld final chunk (truncation)', { chunk: (_t, i, d, emit) => i < 9 && emit(i, d) }, 'TIMEOUT'],
    ['a truncation dressed up as the end (chunk 8 relabelled final)', { chunk: (_t, i, d, emit) => i < 8 ? emit(i, d) : i === 8 && emit(9, d) }, 'INTEGRITY'],
  ];
  for (const [name, tampering, code] of cases) {
    test(`${name}: refused with ${code}`, async () => {
      const result = await attempt(tampering);
      assert.equal(result.outcome, code);
      assert.notEqual(result.sent, 'done');
      assert.deepEqual(result.files, [], 'no file and no temporary file remains');
    });
  }

  test('a relay that forges the delivery receipt cannot make the sender believe in a delivery', async () => {
    const first = await attempt({});
    assert.equal(first.outcome, 'complete');
    assert.equal(first.sent, 'done', 'a genuine receipt is accepted');
    const forged = await attempt({ done: (m) => ({ ...m, receipt: flipB64(m.receipt) }) });
    assert.equal(forged.sent, 'failed');
  });

  test('a chunk replayed from another transfer between the same two people: refused', async () => {
    const first = await attempt({});
    assert.equal(first.outcome, 'complete');
    const old = [...relay.seen.values()][0]!;
    const result = await attempt({ chunk: (_t, i, d, emit) => emit(i, i === 0 ? old[0]! : d) });
    assert.equal(result.outcome, 'INTEGRITY');
    assert.deepEqual(result.files, []);
  });

  test('offers with an altered header, swapped sender keys or a replay are refused and reported', async () => {
    const mallory = Identity.generate();
    const variants: Array<[Tampering['offer'], string]> = [
      [(o) => ({ ...o, header: flipB64(o.header) }), 'BAD_SIGNATURE'],
      [(o) => ({ ...o, cipherBytes: o.cipherBytes + 16, chunkCount: o.chunkCount + 1 }), 'BAD_SIGNATURE'],
      [(o) => ({ ...o, sender: { ...o.sender, signPublicKey: mallory.signPublicKey.toString('base64url') } }), 'BAD_SIGNATURE'],
      [(o) => ({ ...o, stanzas: o.stanzas.map((s) => ({ ...s, wrappedKey: flipB64(s.wrappedKey) })) }), 'BAD_SIGNATURE'],
    ];
    const src = await h.tempDir();
    await writeRandomFile(path.join(src, 'x.bin'), 100);
    for (const [offer, code] of variants) {
      relay.tampering = { offer };
      const refused = new Promise<SftError>((resolve) => bob.inbox.once('refused', (r) => resolve(r.error)));
      const sent = await sendFiles(alice.client, { paths: [path.join(src, 'x.bin')], to: [alice.client.findPeer('bob')] });
      assert.equal((await refused).code, code);
      const leg = sent.recipients[0]!;
      assert.equal(leg.outcome, 'failed');
      assert.equal(leg.outcome === 'failed' && leg.code, code, 'the sender learns why');
    }
    // The same genuine offer delivered twice: the second copy is a replay.
    relay.tampering = { offer: (o) => [o, o] };
    const codes: string[] = [];
    bob.inbox.on('refused', (r) => codes.push(r.error.code));
    const got = bob.nextOffer().then((o) => o.accept({ directory: src + '-in' }));
    const sent = await sendFiles(alice.client, { paths: [path.join(src, 'x.bin')], to: [alice.client.findPeer('bob')] });
    await got;
    assert.deepEqual(codes, ['REPLAYED_OFFER']);
    assert.equal(sent.recipients[0]!.outcome, 'done', 'the replay did not disturb the genuine transfer');
    relay.tampering = {};
    await fs.rm(src + '-in', { recursive: true, force: true });
  });
});

function flip(data: Buffer, at: number): Buffer {
  const copy = Buffer.from(data);
  copy[at % copy.length]! ^= 0x01;
  return copy;
}

function flipB64(text: string): string {
  return flip(Buffer.from(text, 'base64url'), 5).toString('base64url');
}

function swapChunks(a: number, b: number): Tampering {
  let held: Buffer | undefined;
  return {
    chunk: (_t, i, d, emit) => {
      if (i === a) held = d;
      else if (i === b) {
        emit(a, d);
        emit(b, held!);
      } else emit(i, d);
    },
  };
}

test("a relay that presents Mallory's keys under Bob's name, in presence and in an offer: KEY CHANGED, and another safety number", async () => {
  const aliceId = Identity.generate();
  const bob = Identity.generate();
  const mallory = Identity.generate();
  const book = new TrustBook();
  // First contact through a faithful listing: the name "bob" is pinned to Bob's key (not verified).
  const faithful = await hostileRelay([peerInfo(bob, 'bob')], []);
  const first = new RelayClient({ url: faithful.url, identity: aliceId, name: 'alice', reconnect: false });
  try {
    await first.connect();
    for (const p of first.peers.values()) book.remember(p.peerId, p.name);
  } finally {
    first.close();
    await faithful.close();
  }
  assert.equal(book.verdict(bob.peerId, 'bob'), 'seen');
  // What Bob reads out on the call, computed on his side with the real keys; Alice gets the same with them.
  const bobReads = safetyNumber(bob, aliceId);
  assert.equal(safetyNumber(aliceId, peerIdentity(peerInfo(bob, 'bob'))), bobReads);

  // Presence: the relay lists Mallory's keys as "Bob" (under Mallory's own id: a forged id is dropped, above).
  const swapping = await hostileRelay([peerInfo(mallory, 'Bob')], []);
  const second = new RelayClient({ url: swapping.url, identity: aliceId, name: 'alice', reconnect: false });
  try {
    await second.connect();
    const presented = second.findPeer('bob');
    assert.equal(presented.peerId, mallory.peerId);
    assert.equal(book.verdict(presented.peerId, presented.name), 'changed');
    assert.notEqual(safetyNumber(aliceId, peerIdentity(presented)), bobReads, 'comparing numbers exposes the swap');
  } finally {
    second.close();
    await swapping.close();
  }

  // An offer: the relay lets Mallory in as "bob"; the offer is signed with Mallory's keys, so that is who it names.
  const relay = await startHostileRelay();
  const alice = new RelayClient({ url: relay.url, identity: aliceId, name: 'alice', reconnect: false });
  const inbox = new Inbox(alice, { trustOf: (id, name) => book.verdict(id, name) });
  const impostor = new RelayClient({ url: relay.url, identity: mallory, name: 'bob', reconnect: false });
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-swap-'));
  try {
    await alice.connect();
    await impostor.connect();
    for (let i = 0; !impostor.peers.has(aliceId.peerId); i++) {
      assert.ok(i < 200, 'alice listed');
      await new Promise((r) => setTimeout(r, 20));
    }
    await writeRandomFile(path.join(dir, 'invoice.pdf'), 100);
    const offered = new Promise<IncomingOffer>((resolve) => inbox.once('offer', resolve));
    const sending = sendFiles(impostor, { paths: [path.join(dir, 'invoice.pdf')], to: [impostor.findPeer('alice')] });
    const offer = await offered;
    assert.equal(offer.sender.name, 'bob');
    assert.equal(offer.senderTrust, 'changed');
    assert.notEqual(safetyNumber(aliceId, peerIdentity(offer.sender)), bobReads);
    offer.decline();
    assert.equal((await sending).recipients[0]!.outcome, 'declined');
  } finally {
    inbox.dispose();
    alice.close();
    impostor.close();
    await relay.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('a relay that drops the connection while a reconnecting client waits for its join: the client keeps reconnecting and joins', async () => {
  // A stand-in relay: answers the first join, cuts the connection under the second (unanswered),
  // answers the third. Socket.IO must keep reconnecting through the middle one.
  let hellos = 0;
  const relay = await standInRelay((socket, reply) => {
    hellos += 1;
    if (hellos === 2) return void socket.conn.close(); // Mid-join, as a network drop would.
    reply({ ok: true, peers: [] });
    if (hellos === 1) setTimeout(() => socket.conn.close(), 100); // A drop after the first join.
  });
  const url = relay.url;
  const alice = new RelayClient({ url, identity: Identity.generate(), name: 'alice' });
  const states: string[] = [];
  alice.on('state', (s) => states.push(s));
  try {
    await alice.connect();
    const deadline = Date.now() + 10_000;
    while (hellos < 3 || alice.state !== 'connected') {
      assert.ok(Date.now() < deadline, `joined again: hellos ${hellos}, states ${states.join(' → ')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    alice.close();
    await relay.close();
  }
});
