/**
 * The relay as a regulator: who may join, who may claim which identity, presence, limits, hostile
 * messages, the audit trail, and what it sees of a transfer (ciphertext only).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import crypto from 'node:crypto';
import os from 'node:os';
import { Harness, listTree, writeRandomFile } from '../helpers/harness';
import v8 from 'node:v8';
import vm from 'node:vm';
import pino from 'pino';
import { rawConnect, rawJoin, waitFor, type RawConnection } from '../helpers/raw';
import { Identity } from '../../extension/core/crypto/identity';
import { RelayClient } from '../../extension/core/client';
import { sendFiles } from '../../extension/core/transfer/sender';
import { newTransferId, originOf, proveJoin, sealOffer, signReceipt } from '../../extension/core/crypto/envelope';
import { Inbox } from '../../extension/core/transfer/receiver';
import { MAX_MESSAGE_BYTES, PROTOCOL_VERSION, SOCKET_PATH, offerToWire, peerIdentity, peerInfo, type Result } from '../../extension/core/protocol';
import { io as ioClient } from 'socket.io-client';
import { startTapProxy } from '../../scripts/tap-proxy';

const harnesses: Harness[] = [];
async function relay(options: Parameters<typeof Harness.start>[0] = {}) {
  const h = await Harness.start(options);
  harnesses.push(h);
  return h;
}
after(async () => {
  for (const h of harnesses) await h.close();
});

async function sendAndCheck(h: Harness, from: string, to: string, size = 2_000_000) {
  const a = await h.peer(from);
  const b = await h.peer(to);
  await h.until(() => a.client.peers.has(b.identity.peerId));
  await h.sendAndVerify(a, b, size);
}

test('GET /healthz answers 200', async () => {
  const h = await relay();
  const res = await fetch(`${h.url}/healthz`);
  assert.equal(res.status, 200);
  assert.equal(((await res.json()) as { ok: boolean }).ok, true);
});

describe('admission', () => {
  test('a client without the team token, or with a wrong one, is refused with UNAUTHORIZED', async () => {
    const h = await relay({ tokens: ['correct horse battery staple'] });
    await assert.rejects(h.peer('no-token'), { code: 'UNAUTHORIZED' });
    await assert.rejects(h.peer('wrong-token', { token: 'tr0ub4dor&3' }), { code: 'UNAUTHORIZED' });
    const ok = await h.peer('member', { token: 'correct horse battery staple' });
    assert.equal(ok.client.state, 'connected');
  });

  test('a client speaking another protocol version is refused', async () => {
    const h = await relay();
    await assert.rejects(rawConnect(h.url, { v: 999 }), { code: 'PROTOCOL_VERSION' });
  });

  test("a client claiming another's peer id is refused: it cannot sign the challenge", async () => {
    const h = await relay();
    const victim = await h.peer('victim');
    const mallory = Identity.generate();
    const conn = await rawConnect(h.url);
    // Mallory claims the victim's id and keys but can only sign with her own key.
    const claimed = peerInfo(victim.identity, 'victim');
    const result = await rawJoin(conn, mallory, 'victim', claimed);
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.error.code, 'BAD_PROOF');
    await waitFor(() => !conn.socket.connected);
    assert.equal(victim.client.state, 'connected', 'the victim keeps its connection');
  });

  test("a victim's proof replayed on another connection is refused (fresh challenge per connection)", async () => {
    const h = await relay();
    const victim = Identity.generate();
    const first = await rawConnect(h.url);
    const second = await rawConnect(h.url);
    // Proof made for the first connection's challenge, presented on the second.
    const stolen = await new Promise<Result>((resolve) => {
      const proofForFirst = rawJoinPayload(victim, first.challenge.nonce, first.challenge.relayId, originOf(h.url));
      second.socket.timeout(5000).emit('hello', proofForFirst, (_e: unknown, r: Result) => resolve(r));
    });
    assert.equal(!stolen.ok && stolen.error.code, 'BAD_PROOF');
    first.close();
  });

  test('a claimed id that is not the hash of the presented keys is refused', async () => {
    const h = await relay();
    const me = Identity.generate();
    const other = Identity.generate();
    const conn = await rawConnect(h.url);
    const result = await rawJoin(conn, me, 'me', { peerId: other.peerId });
    assert.equal(!result.ok && result.error.code, 'BAD_PROOF');
  });

  test('a join proof is bound to the relay the client dialed: one made for another relay is refused', async () => {
    const h = await relay({ publicUrls: ['https://relay.example.test'] });
    const victim = Identity.generate();
    // A rogue relay passed this relay's challenge to a victim who had dialed the rogue relay.
    const forwarded = await rawConnect(h.url);
    const stolen = await rawJoin(forwarded, victim, 'victim', { origin: 'rogue.example.test' });
    assert.equal(!stolen.ok && stolen.error.code, 'BAD_PROOF');
    // A client that dialed this relay's public URL gets in.
    const honest = await rawConnect(h.url);
    assert.equal((await rawJoin(honest, Identity.generate(), 'honest', { origin: 'relay.example.test' })).ok, true);
    honest.close();
  });

  test('a connection that never proves its identity is dropped', async () => {
    const h = await relay({ helloTimeoutMs: 300 });
    const conn = await rawConnect(h.url);
    await waitFor(() => !conn.socket.connected, 3000);
  });
});

/** A hello built by hand, so the test controls which challenge is signed. */
function rawJoinPayload(identity: Identity, nonce: string, relayId: string, origin: string) {
  return { ...peerInfo(identity, 'victim'), origin, proof: proveJoin(identity, Buffer.from(nonce, 'base64url'), relayId, origin).toString('base64url') };
}

test('presence: peers see each other join and leave, live', async () => {
  const h = await relay();
  const a = await h.peer('alice');
  const b = await h.peer('bob');
  await h.until(() => a.client.peers.has(b.identity.peerId) && b.client.peers.has(a.identity.peerId));
  const listed = a.client.peers.get(b.identity.peerId)!;
  assert.equal(listed.name, 'bob');
  assert.deepEqual(peerIdentity(listed).signPublicKey, b.identity.signPublicKey);
  b.client.close();
  await h.until(() => !a.client.peers.has(b.identity.peerId));
});

test('a reconnecting identity replaces its stale connection', async () => {
  const h = await relay();
  const identity = Identity.generate();
  const watcher = await h.peer('watcher');
  const first = await h.peer('twin', { identity });
  await h.until(() => watcher.client.peers.has(identity.peerId));
  const second = await h.peer('twin', { identity });
  await h.until(() => first.client.state === 'disconnected');
  assert.equal(second.client.state, 'connected');
  assert.ok(watcher.client.peers.has(identity.peerId), 'the replaced connection does not announce a departure');
});

describe('limits', () => {
  test('FILE_TOO_LARGE: the declared size is checked before anything is relayed', async () => {
    const h = await relay({ maxFileSize: 1000 });
    const a = await h.peer('a');
    const b = await h.peer('b');
    await h.until(() => a.client.peers.has(b.identity.peerId));
    const src = await h.tempDir();
    await writeRandomFile(path.join(src, 'big.bin'), 1001);
    await assert.rejects(sendFiles(a.client, { paths: [path.join(src, 'big.bin')], to: [a.client.findPeer('b')] }), { code: 'FILE_TOO_LARGE' });
    await writeRandomFile(path.join(src, 'ok.bin'), 1000);
    b.nextOffer().then((o) => o.accept({ directory: src + '-in' }));
    const sent = await sendFiles(a.client, { paths: [path.join(src, 'ok.bin')], to: [a.client.findPeer('b')] });
    assert.equal(sent.recipients[0]!.outcome, 'done');
    await fs.rm(src + '-in', { recursive: true, force: true });
  });

  test('TOO_MANY_TRANSFERS: concurrent transfers per client are capped', async () => {
    const h = await relay({ maxTransfersPerClient: 1 });
    const a = await h.peer('a');
    const b = await h.peer('b');
    await h.until(() => a.client.peers.has(b.identity.peerId));
    const src = await h.tempDir();
    await writeRandomFile(path.join(src, 'x.bin'), 10);
    // b never answers the first offer, so it stays open.
    const first = sendFiles(a.client, { paths: [path.join(src, 'x.bin')], to: [a.client.findPeer('b')], answerTimeoutMs: 2000 });
    await new Promise<void>((resolve) => b.inbox.once('offer', () => resolve()));
    await assert.rejects(sendFiles(a.client, { paths: [path.join(src, 'x.bin')], to: [a.client.findPeer('b')] }), { code: 'TOO_MANY_TRANSFERS' });
    const result = await first;
    assert.equal(result.recipients[0]!.outcome, 'failed');
  });

  test('RATE_LIMITED: a flood of control messages is refused and the flooder disconnected; others unaffected', async () => {
    const h = await relay({ controlRate: { perSecond: 5, burst: 10 } });
    const flooder = Identity.generate();
    const conn = await rawConnect(h.url);
    assert.equal((await rawJoin(conn, flooder, 'flooder')).ok, true);
    for (let i = 0; i < 200 && conn.socket.connected; i++) conn.socket.emit('answer', { transferId: 'A'.repeat(22), accept: true });
    await waitFor(() => !conn.socket.connected, 5000);
    assert.ok(conn.errors.some((e) => e.code === 'RATE_LIMITED'));
    await sendAndCheck(h, 'calm-a', 'calm-b');
  });

  /** A signed offer from `sender` to `to` of a 10-byte file: valid in every way the relay checks. */
  const tinyOffer = (sender: Identity, to: Identity) =>
    offerToWire(
      sealOffer({
        sender,
        recipients: [to.publicIdentity],
        transferId: newTransferId(),
        createdAt: Date.now(),
        header: { v: 1, entries: [{ path: 'a.bin', type: 'file', size: 10 }], chunkSize: 64, plainBytes: 10 },
      }).offer,
    );

  test('an offer flood is refused with RATE_LIMITED and the flooder disconnected, while another pair completes a transfer', async () => {
    // Control messages are allowed generously here, so that the offer limit is what stops the flood.
    const auditLog = path.join(await fs.mkdtemp(path.join(os.tmpdir(), 'sft-flood-')), 'audit.jsonl');
    const h = await relay({ offersPerClientPerMinute: 10, maxTransfersPerClient: 20, controlRate: { perSecond: 1000, burst: 1000 }, auditLog });
    const target = await h.peer('target');
    const flooder = Identity.generate();
    const conn = await rawConnect(h.url);
    assert.equal((await rawJoin(conn, flooder, 'flooder')).ok, true);
    await h.until(() => target.client.peers.has(flooder.peerId));
    // The target declines whatever reaches it, so the flood never hits the transfer limits.
    const reached: string[] = [];
    target.inbox.on('offer', (o) => {
      reached.push(o.transferId);
      o.decline();
    });
    const replies: Result[] = [];
    const calm = sendAndCheck(h, 'calm-a', 'calm-b');
    // The allowance first, answered one by one: an offer still being checked when its sender is
    // disconnected is dropped, so a flood that began at once would leave the count to timing.
    for (let i = 0; i < 10; i++) replies.push((await conn.socket.timeout(10_000).emitWithAck('offer', tinyOffer(flooder, target.identity))) as Result);
    assert.deepEqual(replies.map((r) => r.ok), Array(10).fill(true), JSON.stringify(replies));
    for (let i = 0; i < 190 && conn.socket.connected; i++) {
      conn.socket.timeout(10_000).emit('offer', tinyOffer(flooder, target.identity), (error: unknown, reply: Result) => {
        if (!error) replies.push(reply);
      });
    }
    await waitFor(() => !conn.socket.connected, 10_000);
    await calm;
    const codes = replies.map((r) => (r.ok ? 'ok' : r.error.code));
    // Refusals are answered at once, acceptances after a lookup, so the order of replies is not
    // the order of offers; some replies are lost with the connection.
    assert.ok(codes.filter((c) => c === 'RATE_LIMITED').length >= 40, codes.join(','));
    assert.ok(codes.every((c) => c === 'ok' || c === 'RATE_LIMITED'), codes.join(','));
    // Exactly ten offers were taken: the audit log records each one the relay let through.
    const taken = async () => (await fs.readFile(auditLog, 'utf8')).split('\n').filter((l) => l.includes('"event":"offer"') && l.includes(flooder.peerId)).length;
    await h.until(() => reached.length === 10, 10_000);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(await taken(), 10);
    assert.equal(reached.length, 10, 'no offer past the limit reached the target');
    await h.until(() => h.relay!.stats().transfers === 0, 10_000);
  });

  test('many identities from one address share one offer budget; another address is not affected', async () => {
    const h = await relay({ offersPerClientPerMinute: 100, offersPerAddressPerMinute: 12 });
    const target = await h.peer('target');
    target.inbox.on('offer', (o) => o.decline());
    const codes: string[] = [];
    const flooders: Array<{ conn: Awaited<ReturnType<typeof rawConnect>>; identity: Identity }> = [];
    for (let i = 0; i < 6; i++) {
      const identity = Identity.generate();
      const conn = await rawConnect(h.url);
      assert.equal((await rawJoin(conn, identity, `sock-${i}`)).ok, true);
      flooders.push({ conn, identity });
    }
    await h.until(() => target.client.peers.size === 6);
    // Six identities, four offers each, one after another: 24 offers, but the address has 12.
    for (let round = 0; round < 4; round++) {
      for (const { conn, identity } of flooders) {
        const reply = (await conn.socket.timeout(10_000).emitWithAck('offer', tinyOffer(identity, target.identity))) as Result;
        codes.push(reply.ok ? 'ok' : reply.error.code);
      }
    }
    assert.equal(codes.filter((c) => c === 'ok').length, 12, codes.join(','));
    assert.deepEqual(codes.slice(12), Array(12).fill('RATE_LIMITED'));
    // A client behind another address (here: a forwarded one, trusted by this relay) is unaffected.
    // Without trustProxy every test client shares 127.0.0.1, so that half is checked through a
    // relay that takes the address from X-Forwarded-For.
    const proxied = await relay({ offersPerAddressPerMinute: 2, trustProxy: true });
    const bob = await proxied.peer('bob');
    bob.inbox.on('offer', (o) => o.decline());
    const from = async (address: string) => {
      const identity = Identity.generate();
      const socket = ioClient(proxied.url, { path: SOCKET_PATH, transports: ['websocket'], reconnection: false, forceNew: true, auth: { v: PROTOCOL_VERSION }, extraHeaders: { 'x-forwarded-for': address } });
      const challenge = await new Promise<{ nonce: string; relayId: string }>((resolve) => socket.once('challenge', resolve));
      const conn = { socket, url: proxied.url, challenge, errors: [], close: () => socket.disconnect() } as unknown as Awaited<ReturnType<typeof rawConnect>>;
      assert.equal((await rawJoin(conn, identity, address)).ok, true);
      await proxied.until(() => bob.client.peers.has(identity.peerId));
      const offer = async () => {
        const reply = (await socket.timeout(10_000).emitWithAck('offer', tinyOffer(identity, bob.identity))) as Result;
        return reply.ok ? 'ok' : reply.error.code;
      };
      return { offer, close: () => socket.disconnect() };
    };
    const one = await from('203.0.113.1');
    const other = await from('203.0.113.2');
    assert.deepEqual([await one.offer(), await one.offer(), await one.offer()], ['ok', 'ok', 'RATE_LIMITED']);
    assert.deepEqual([await other.offer(), await other.offer()], ['ok', 'ok'], 'another address has its own budget');
    one.close();
    other.close();
    for (const { conn } of flooders) conn.close();
  });

  test('JOIN_RATE_LIMITED per identity: one peer id rejoining in a loop is refused, and its live connection kept', async () => {
    const h = await relay({ joinsPerPeerPerMinute: 3, joinRate: { perSecond: 100, burst: 100 } });
    const identity = Identity.generate();
    const watcher = await h.peer('watcher');
    const results: string[] = [];
    let last: Awaited<ReturnType<typeof rawConnect>> | undefined;
    for (let i = 0; i < 8; i++) {
      const conn = await rawConnect(h.url);
      const joined = await rawJoin(conn, identity, 'looper');
      results.push(joined.ok ? 'ok' : joined.error.code);
      if (joined.ok) last = conn;
      else await waitFor(() => !conn.socket.connected, 5000);
    }
    assert.deepEqual(results, ['ok', 'ok', 'ok', 'JOIN_RATE_LIMITED', 'JOIN_RATE_LIMITED', 'JOIN_RATE_LIMITED', 'JOIN_RATE_LIMITED', 'JOIN_RATE_LIMITED']);
    assert.ok(last?.socket.connected, 'the refused rejoins did not replace the live connection');
    assert.ok(watcher.client.peers.has(identity.peerId));
    // Another identity from the same address still joins.
    assert.equal((await rawJoin(await rawConnect(h.url), Identity.generate(), 'other')).ok, true);
    last?.close();
  });

  test('JOIN_RATE_LIMITED: connection attempts per address are capped', async () => {
    const h = await relay({ joinRate: { perSecond: 0.1, burst: 3 } });
    const codes: unknown[] = [];
    for (let i = 0; i < 6; i++) {
      await rawConnect(h.url).then(
        (c) => c.close(),
        (e: { code?: string }) => codes.push(e.code),
      );
    }
    assert.deepEqual(codes, ['JOIN_RATE_LIMITED', 'JOIN_RATE_LIMITED', 'JOIN_RATE_LIMITED']);
  });
});

describe('hostile clients', () => {
  test('malformed, unknown and misdirected messages are refused with codes while a transfer completes', async () => {
    const h = await relay();
    const hostile = Identity.generate();
    const conn = await rawConnect(h.url);
    assert.equal((await rawJoin(conn, hostile, 'hostile')).ok, true);
    const good = sendAndCheck(h, 'good-a', 'good-b', 8_000_000);
    const s = conn.socket;
    const garbage: unknown[] = [null, 42, 'text', [], { transferId: 7 }, { transferId: 'x'.repeat(10_000) }, { index: -1 }, Buffer.alloc(100)];
    for (const g of garbage) {
      for (const event of ['answer', 'ack', 'done', 'cancel']) s.emit(event, g);
      s.emit('chunk', g, g, g);
      s.emit('offer', g, () => undefined);
    }
    s.emit('no-such-event', { hello: 'world' });
    // Messages for a transfer that does not exist, or is not this client's.
    s.emit('chunk', 'B'.repeat(22), 0, Buffer.alloc(10));
    s.emit('ack', { transferId: 'B'.repeat(22), index: 0 });
    await good;
    const codes = new Set(conn.errors.map((e) => e.code));
    assert.ok(codes.has('BAD_MESSAGE'), `got ${[...codes].join(',')}`);
    assert.ok(codes.has('UNKNOWN_TRANSFER'), `got ${[...codes].join(',')}`);
  });

  test('an oversized frame disconnects only its sender', async () => {
    const h = await relay();
    const hostile = Identity.generate();
    const conn = await rawConnect(h.url);
    assert.equal((await rawJoin(conn, hostile, 'hostile')).ok, true);
    conn.socket.emit('chunk', 'C'.repeat(22), 0, Buffer.alloc(MAX_MESSAGE_BYTES + 1024));
    await waitFor(() => !conn.socket.connected, 5000);
    await sendAndCheck(h, 'after-a', 'after-b');
  });

  test('messages before joining are refused with NOT_JOINED', async () => {
    const h = await relay();
    const conn = await rawConnect(h.url);
    conn.socket.emit('cancel', { transferId: 'D'.repeat(22), code: 'CANCELLED' });
    await waitFor(() => conn.errors.length > 0);
    assert.equal(conn.errors[0]!.code, 'NOT_JOINED');
    conn.close();
  });

  test('chunks before the recipient accepts, out of order, or from a non-sender are refused', async () => {
    const h = await relay();
    const mallory = Identity.generate();
    const conn = await rawConnect(h.url);
    assert.equal((await rawJoin(conn, mallory, 'mallory')).ok, true);
    const eve = await rawConnect(h.url);
    assert.equal((await rawJoin(eve, Identity.generate(), 'eve')).ok, true);
    const bob = await h.peer('bob');
    await h.until(() => bob.client.peers.size === 2);

    /** Mallory offers bob 200 bytes in 64-byte chunks; resolves once bob has the offer. */
    const offerToBob = async () => {
      const transferId = newTransferId();
      const { offer } = sealOffer({
        sender: mallory,
        recipients: [bob.identity.publicIdentity],
        transferId,
        createdAt: Date.now(),
        header: { v: 1, entries: [{ path: 'a.bin', type: 'file', size: 200 }], chunkSize: 64, plainBytes: 200 },
      });
      const incoming = bob.nextOffer();
      const reply = (await conn.socket.timeout(5000).emitWithAck('offer', offerToWire(offer))) as Result;
      assert.equal(reply.ok, true);
      return { transferId, incoming: await incoming };
    };
    const nextCancel = () => new Promise<{ code: string }>((resolve) => conn.socket.once('cancel', resolve));

    const early = await offerToBob();
    let cancelled = nextCancel();
    conn.socket.emit('chunk', early.transferId, 0, Buffer.alloc(64 + 16));
    assert.equal((await cancelled).code, 'NOT_ACCEPTED');

    const skipping = await offerToBob();
    const out = await h.tempDir();
    const answered = new Promise((resolve) => conn.socket.once('answer', resolve));
    const receiving = skipping.incoming.accept({ directory: out });
    receiving.catch(() => undefined); // Asserted below: it may fail before the sender hears why.
    await answered;
    cancelled = nextCancel();
    conn.socket.emit('chunk', skipping.transferId, 1, Buffer.alloc(64 + 16));
    assert.equal((await cancelled).code, 'OUT_OF_ORDER');
    await assert.rejects(receiving, { code: 'OUT_OF_ORDER' });
    assert.deepEqual(await fs.readdir(out), [], 'nothing was written');

    const intruded = await offerToBob();
    eve.socket.emit('chunk', intruded.transferId, 0, Buffer.alloc(64 + 16));
    eve.socket.emit('answer', { transferId: intruded.transferId, accept: true });
    await waitFor(() => eve.errors.length >= 2);
    assert.deepEqual(eve.errors.map((e) => e.code), ['NOT_PARTICIPANT', 'NOT_PARTICIPANT']);
    intruded.incoming.decline();
    eve.close();
    conn.close();
  });
});

test('the relay sees only ciphertext: no file name and no content marker crosses it in the clear', async () => {
  const h = await relay();
  const recorded: Buffer[] = [];
  const tap = await startTapProxy(h.url, (_d, data) => recorded.push(Buffer.from(data)));
  try {
    const marker = `MARKER-${crypto.randomBytes(12).toString('hex')}`;
    const name = `secret-plans-${crypto.randomBytes(4).toString('hex')}.txt`;
    const a = new RelayClient({ url: tap.url, identity: Identity.generate(), name: 'tapped-alice', reconnect: false });
    const b = new RelayClient({ url: tap.url, identity: Identity.generate(), name: 'tapped-bob', reconnect: false });
    const inbox = new Inbox(b);
    await a.connect();
    await b.connect();
    await h.until(() => a.peers.has(b.identity.peerId));
    const src = await h.tempDir();
    const out = await h.tempDir();
    const content = Buffer.concat([Buffer.from(`${marker}\n`), crypto.randomBytes(600_000), Buffer.from(`\n${marker}\n`)]);
    await fs.writeFile(path.join(src, name), content);
    const got = new Promise((resolve) => inbox.once('offer', (o) => resolve(o.accept({ directory: out }))));
    const sent = await sendFiles(a, { paths: [path.join(src, name)], to: [a.findPeer('tapped-bob')] });
    await got;
    assert.equal(sent.recipients[0]!.outcome, 'done');
    assert.deepEqual(await fs.readFile(path.join(out, name)), content);
    inbox.dispose();
    a.close();
    b.close();

    const wire = Buffer.concat(recorded);
    assert.ok(wire.length > content.length, 'the tap recorded the whole transfer');
    // The tap does see what the relay is meant to see, so it would see a leak too.
    assert.ok(wire.includes(Buffer.from('tapped-bob')), 'display names are visible to the relay by design');
    for (const needle of [name, marker, path.basename(name, '.txt')]) {
      assert.equal(wire.includes(Buffer.from(needle)), false, `"${needle}" crossed the relay in UTF-8`);
      assert.equal(wire.includes(Buffer.from(needle, 'utf16le')), false, `"${needle}" crossed the relay in UTF-16`);
      assert.equal(wire.toString('latin1').includes(Buffer.from(needle).toString('base64').slice(0, 16)), false, `"${needle}" crossed the relay in base64`);
    }
  } finally {
    await tap.close();
  }
});

/** The WebSocket frames a client sent, read from the raw bytes after its HTTP upgrade request. */
function clientFrames(stream: Buffer): { opcode: number; mask: Buffer; length: number }[] {
  let at = stream.indexOf('\r\n\r\n') + 4;
  assert.ok(at > 4, 'the connection starts with an HTTP upgrade request');
  const frames: { opcode: number; mask: Buffer; length: number }[] = [];
  while (at + 2 <= stream.length) {
    const masked = (stream[at + 1]! & 0x80) !== 0;
    let length = stream[at + 1]! & 0x7f;
    let header = 2;
    if (length === 126) [length, header] = [stream.readUInt16BE(at + 2), 4];
    else if (length === 127) [length, header] = [Number(stream.readBigUInt64BE(at + 2)), 10];
    assert.ok(masked, 'every frame from a client carries a mask key (RFC 6455 §5.1)');
    if (at + header + 4 + length > stream.length) break; // the connection closed mid-frame
    frames.push({ opcode: stream[at]! & 0x0f, mask: stream.subarray(at + header, at + header + 4), length });
    at += header + 4 + length;
  }
  return frames;
}

test('framing: chunk ciphertext goes to the relay with a zero WebSocket mask, every other frame with a random one', async () => {
  const h = await relay();
  const toRelay = new Map<number, Buffer[]>();
  const tap = await startTapProxy(h.url, (direction, data, connection) => {
    if (direction === 'to-relay') toRelay.set(connection, [...(toRelay.get(connection) ?? []), Buffer.from(data)]);
  });
  try {
    const a = await h.peer('framed-alice', { url: tap.url });
    const b = await h.peer('framed-bob', { url: tap.url });
    await h.until(() => a.client.peers.has(b.identity.peerId));
    const size = 6_000_000;
    await h.sendAndVerify(a, b, size);

    const frames = [...toRelay.values()].flatMap((chunks) => clientFrames(Buffer.concat(chunks)));
    const binary = frames.filter((f) => f.opcode === 2);
    const other = frames.filter((f) => f.opcode !== 2 && f.opcode !== 0);
    assert.ok(binary.reduce((n, f) => n + f.length, 0) >= size, 'the whole payload went up in binary frames');
    assert.deepEqual(binary.filter((f) => !f.mask.equals(Buffer.alloc(4))), [], 'chunk frames are sent unmasked (zero mask)');
    assert.ok(other.length > 10, 'the control messages were seen too');
    // The control messages of both clients (join, offer, acknowledgements…) keep random masks.
    assert.deepEqual(other.filter((f) => f.mask.equals(Buffer.alloc(4))), [], 'no control frame went out with a zero mask');
    assert.ok(new Set(other.map((f) => f.mask.toString('hex'))).size > other.length / 2, 'control frames have fresh masks');
  } finally {
    await tap.close();
  }
});

test('the audit log has one JSON line per event, with ids and ciphertext sizes, and never a file name', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-audit-'));
  const auditLog = path.join(dir, 'audit.jsonl');
  const h = await relay({ auditLog });
  const a = await h.peer('auditor-a');
  const b = await h.peer('auditor-b');
  await h.until(() => a.client.peers.has(b.identity.peerId));
  const src = await h.tempDir();
  const name = 'confidential-merger-terms.pdf';
  await writeRandomFile(path.join(src, name), 100_000);
  const got = b.nextOffer().then((o) => o.accept({ directory: src + '-in' }));
  const sent = await sendFiles(a.client, { paths: [path.join(src, name)], to: [a.client.findPeer('auditor-b')] });
  await got;
  b.nextOffer().then((o) => o.decline());
  await sendFiles(a.client, { paths: [path.join(src, name)], to: [a.client.findPeer('auditor-b')] });
  await new Promise((r) => setTimeout(r, 100)); // The decline's audit line is written as the sender learns of it.
  const text = await fs.readFile(auditLog, 'utf8');
  const lines = text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const events = lines.map((l) => l.event);
  assert.deepEqual(events, ['join', 'join', 'offer', 'accept', 'complete', 'offer', 'decline']);
  for (const line of lines) assert.match(String(line.ts), /^\d{4}-\d\d-\d\dT/);
  const complete = lines.find((l) => l.event === 'complete')!;
  assert.equal(complete.from, a.identity.peerId);
  assert.equal(complete.to, b.identity.peerId);
  assert.equal(complete.cipherBytes, sent.cipherBytes);
  assert.equal(typeof complete.durationMs, 'number');
  assert.equal(text.includes('confidential'), false);
  assert.equal(text.includes(a.identity.signPublicKey.toString('base64url')), false, 'no keys in the audit log');
  await fs.rm(dir, { recursive: true, force: true });
  await fs.rm(src + '-in', { recursive: true, force: true });
});

test('flow control: a slow receiver slows its sender, the relay never runs more than a window ahead, others are unaffected', async () => {
  const h = await relay({ window: 8 });
  const alice = await h.peer('fast-sender');
  const slow = await rawConnect(h.url);
  const slowIdentity = Identity.generate();
  assert.equal((await rawJoin(slow, slowIdentity, 'slow-receiver')).ok, true);
  await h.until(() => alice.client.peers.has(slowIdentity.peerId));
  const src = await h.tempDir();
  const chunkSize = 256 * 1024; // Counted in chunks below; any size would do.
  await writeRandomFile(path.join(src, 'slow.bin'), 48 * chunkSize);

  let received = 0;
  let acked = 0;
  let worstLead = 0;
  slow.socket.on('offer', (offer: { transferId: string }) => slow.socket.emit('answer', { transferId: offer.transferId, accept: true }, () => undefined));
  let disk = Promise.resolve();
  slow.socket.on('chunk', (transferId: string, index: number) => {
    received += 1;
    worstLead = Math.max(worstLead, received - acked);
    // A slow disk: each chunk takes 15 ms to "write", one after another, before it is acknowledged.
    disk = disk.then(async () => {
      await new Promise((r) => setTimeout(r, 15));
      acked += 1;
      slow.socket.emit('ack', { transferId, index });
      if (index === 47) {
        const receipt = signReceipt(slowIdentity, { transferId, senderPeerId: alice.identity.peerId, chunkCount: 48, cipherBytes: 48 * (chunkSize + 16) });
        slow.socket.emit('done', { transferId, receipt: receipt.toString('base64url') }, () => undefined);
      }
    });
  });
  const started = Date.now();
  const slowTransfer = sendFiles(alice.client, { paths: [path.join(src, 'slow.bin')], to: [alice.client.findPeer('slow-receiver')], chunkSize });
  // Meanwhile another pair moves a file at full speed.
  await sendAndCheck(h, 'other-a', 'other-b', 8_000_000);
  const otherDoneWhileSlowRan = h.relay!.stats().transfers > 0;
  const result = await slowTransfer;
  assert.equal(result.recipients[0]!.outcome, 'done');
  assert.ok(worstLead <= 8, `the receiver got ${worstLead} chunks ahead of its acknowledgements (window 8)`);
  assert.ok(Date.now() - started >= 48 * 15 * 0.9, 'the sender went at the receiver\'s pace');
  assert.ok(otherDoneWhileSlowRan, 'the other transfer finished while the slow one was still running');
  slow.close();
});

test('offers sent all at once cannot slip past the concurrent-transfer limit', async () => {
  const h = await relay({ maxTransfersPerClient: 2 });
  const bob = await h.peer('bob');
  const mallory = Identity.generate();
  const conn = await rawConnect(h.url);
  assert.equal((await rawJoin(conn, mallory, 'mallory')).ok, true);
  await h.until(() => bob.client.peers.size === 1);
  const offers = Array.from({ length: 20 }, () =>
    offerToWire(
      sealOffer({
        sender: mallory,
        recipients: [bob.identity.publicIdentity],
        transferId: newTransferId(),
        createdAt: Date.now(),
        header: { v: 1, entries: [{ path: 'a.bin', type: 'file', size: 10 }], chunkSize: 64, plainBytes: 10 },
      }).offer,
    ),
  );
  const replies = (await Promise.all(offers.map((o) => conn.socket.timeout(5000).emitWithAck('offer', o)))) as Result[];
  assert.equal(replies.filter((r) => r.ok).length, 2);
  assert.ok(replies.every((r) => r.ok || r.error.code === 'TOO_MANY_TRANSFERS'));
  conn.close();
});

test('a recipient that acknowledges data it never reads cannot make the relay buffer it: SLOW_CONSUMER', async () => {
  const h = await relay({ window: 4 });
  const sender = Identity.generate();
  const colluder = Identity.generate();
  const s = await rawConnect(h.url);
  const r = await rawConnect(h.url);
  assert.equal((await rawJoin(s, sender, 'sender')).ok, true);
  assert.equal((await rawJoin(r, colluder, 'colluder')).ok, true);
  const chunkSize = 1024 * 1024;
  const chunks = 400; // 400 MiB if the relay kept it all.
  const transferId = newTransferId();
  const { offer } = sealOffer({
    sender,
    recipients: [colluder.publicIdentity],
    transferId,
    createdAt: Date.now(),
    header: { v: 1, entries: [{ path: 'x.bin', type: 'file', size: chunks * chunkSize }], chunkSize, plainBytes: chunks * chunkSize },
  });
  const answered = new Promise((resolve) => s.socket.once('answer', resolve));
  r.socket.once('offer', () => r.socket.emit('answer', { transferId, accept: true }, () => undefined));
  assert.equal(((await s.socket.timeout(5000).emitWithAck('offer', offerToWire(offer))) as Result).ok, true);
  await answered;
  // The colluder stops reading its connection but keeps acknowledging everything sent.
  (r.socket.io.engine.transport as unknown as { ws: { _socket: { pause(): void } } }).ws._socket.pause();
  let stopped: string | undefined;
  s.socket.on('cancel', (m: { code: string }) => (stopped = m.code));
  const payload = Buffer.alloc(chunkSize + 16);
  for (let i = 0; i < chunks && !stopped; i++) {
    s.socket.emit('chunk', transferId, i, payload);
    await new Promise((resolve) => setTimeout(resolve, 2));
    r.socket.emit('ack', { transferId, index: i });
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  await waitFor(() => stopped !== undefined, 5000);
  assert.equal(stopped, 'SLOW_CONSUMER');
  s.close();
  r.close();
});

for (const who of ['receiver', 'sender'] as const) {
  test(`a cancel by the ${who} mid-transfer: CANCELLED on both sides, one audited cancel, no transfer left at the relay, nothing partial`, async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-cancel-audit-'));
    const auditLog = path.join(dir, 'audit.jsonl');
    const h = await relay({ auditLog });
    const a = await h.peer('cancel-a');
    const b = await h.peer('cancel-b');
    await h.until(() => a.client.peers.has(b.identity.peerId));
    const src = await h.tempDir();
    const out = await h.tempDir();
    await writeRandomFile(path.join(src, 'big.bin'), 40 * 1024 * 1024, 'cancel-audit');
    const controller = new AbortController();
    const midway = { signal: controller.signal, onProgress: (p: { bytes: number }) => p.bytes > 2 * 1024 * 1024 && controller.abort() };
    const received = b.nextOffer().then((o) => o.accept({ directory: out, ...(who === 'receiver' ? midway : {}) }));
    received.catch(() => undefined);
    const sent = await sendFiles(a.client, { paths: [path.join(src, 'big.bin')], to: [a.client.findPeer('cancel-b')], ...(who === 'sender' ? midway : {}) });
    await assert.rejects(received, { code: 'CANCELLED' });
    const leg = sent.recipients[0]!;
    assert.equal(leg.outcome === 'failed' && leg.code, 'CANCELLED');
    await h.until(() => h.relay!.stats().transfers === 0, 10_000);
    assert.deepEqual(await listTree(out), [], 'neither the file nor its temporary remains');
    let lines: Array<Record<string, unknown>> = [];
    await waitFor(() => {
      void fs.readFile(auditLog, 'utf8').then((t) => (lines = t.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)));
      return lines.some((l) => l.event === 'cancel');
    }, 10_000);
    await new Promise((r) => setTimeout(r, 200)); // A second line, if any, would be written by now.
    lines = (await fs.readFile(auditLog, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const cancels = lines.filter((l) => l.event === 'cancel');
    assert.equal(cancels.length, 1, JSON.stringify(lines));
    const by = who === 'sender' ? a.identity.peerId : b.identity.peerId;
    assert.deepEqual({ ...cancels[0], ts: undefined, cipherBytes: undefined, durationMs: undefined }, {
      ts: undefined, event: 'cancel', transfer: sent.transferId, from: a.identity.peerId, to: b.identity.peerId, by, code: 'CANCELLED', cipherBytes: undefined, durationMs: undefined,
    });
    assert.ok((cancels[0]!.cipherBytes as number) > 0 && (cancels[0]!.cipherBytes as number) < sent.cipherBytes, 'cancelled midway');
    assert.equal(lines.filter((l) => l.event === 'complete' || l.event === 'fail').length, 0);
    await fs.rm(dir, { recursive: true, force: true });
  });
}

test('an unknown event alone gets exactly BAD_MESSAGE, keeps the connection, and the refusal is logged with its code', async () => {
  const logged: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void logged.push(JSON.parse(line) as Record<string, unknown>) });
  const h = await relay({ logger });
  const identity = Identity.generate();
  const conn = await rawConnect(h.url);
  assert.equal((await rawJoin(conn, identity, 'curious')).ok, true);
  conn.socket.emit('no-such-event', { hello: 'world' });
  await waitFor(() => conn.errors.length > 0);
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(conn.errors, [{ code: 'BAD_MESSAGE', message: 'Unknown message type.' }]);
  assert.equal(conn.socket.connected, true, 'one unknown message does not cost the connection');
  const refusals = logged.filter((l) => l.msg === 'refused message');
  assert.deepEqual(refusals.map((l) => [l.code, l.peer]), [['BAD_MESSAGE', identity.peerId]]);
  conn.close();
});

/** `gc()` without --expose-gc on the command line (the test runner does not pass it). */
function collector(): (() => void) | undefined {
  try {
    v8.setFlagsFromString('--expose-gc');
    return vm.runInNewContext('gc') as () => void;
  } catch {
    return undefined;
  }
}

test('10,000 junk messages and oversized frames from throwaway clients leave nothing behind', { timeout: 180_000 }, async () => {
  const h = await relay({ joinRate: { perSecond: 10_000, burst: 10_000 } });
  const bystander = await h.peer('bystander');
  const gc = collector();
  const settle = async () => {
    for (let i = 0; i < 3; i++) {
      gc?.();
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const junk: Array<(s: RawConnection['socket'], i: number) => void> = [
    (s, i) => s.emit(`junk-${i}`, { i }),
    (s, i) => s.emit('chunk', 'x'.repeat(i % 40), i, 'not a buffer'),
    (s, i) => s.emit('ack', { transferId: crypto.randomBytes(16).toString('base64url').slice(0, 22), index: i }),
    (s) => s.emit('answer', [1, 2, 3]),
  ];
  /** `clients` throwaway clients, half of them joined, each sending `each` junk messages. */
  const round = async (clients: number, each: number) => {
    let sent = 0;
    for (let c = 0; c < clients; c++) {
      const conn = await rawConnect(h.url);
      if (c % 2 === 0) assert.equal((await rawJoin(conn, Identity.generate(), `junk-${c}`)).ok, true);
      for (let i = 0; i < each; i++, sent++) junk[i % junk.length]!(conn.socket, i);
      // Fifty refusals end a connection; the relay drops whatever else is on its way.
      await waitFor(() => !conn.socket.connected, 20_000);
      conn.close();
    }
    for (let c = 0; c < 4; c++) {
      const conn = await rawConnect(h.url);
      conn.socket.emit('chunk', 'C'.repeat(22), 0, Buffer.alloc(MAX_MESSAGE_BYTES + 1024));
      await waitFor(() => !conn.socket.connected, 20_000);
      conn.close();
    }
    return sent;
  };
  const baseline = () => h.relay!.stats().connections === 1 && h.relay!.stats().peers === 1 && h.relay!.stats().transfers === 0;
  await round(4, 100); // Warm-up: whatever is created lazily exists before the baseline is taken.
  await h.until(baseline, 20_000);
  await settle();
  const before = process.memoryUsage().heapUsed;
  assert.ok((await round(40, 250)) >= 10_000);
  await h.until(baseline, 30_000);
  await settle();
  const grown = process.memoryUsage().heapUsed - before;
  // Each connection's 50 refusals are handled (about 2,000 in all; the rest go with the closed
  // connections). With a forced collection the heap settles within about 1 MiB here, so a leak
  // of 2 KiB per refusal, or a few KiB per connection, would show. Without one it floats a lot.
  const bound = gc ? 4 * 1024 * 1024 : 64 * 1024 * 1024;
  assert.ok(grown < bound, `the heap grew by ${(grown / 1024 / 1024).toFixed(1)} MiB (bound ${bound / 1024 / 1024} MiB, gc ${gc ? 'forced' : 'not available'})`);
  assert.equal(bystander.client.state, 'connected', 'a bystander kept its connection throughout');
  await sendAndCheck(h, 'after-junk-a', 'after-junk-b');
});
