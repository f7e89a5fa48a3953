/**
 * Resume with several recipients: one recipient's connection cut (its leg waits while the other
 * goes on, then continues from its own position), the sender's connection cut (every leg
 * continues, each from its own position, with no chunk sent twice to a recipient), a recipient
 * that does not come back (its leg EXPIRED, the other delivered), and the relay's refusal of a
 * resume naming a leg that was not interrupted. Real relay, real clients, real files; the network
 * cut is a TCP proxy that drops every connection through it.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Harness, listTree, sha256File, writeRandomFile, type Peer } from '../helpers/harness';
import { sendFiles } from '../../extension/core/transfer/sender';
import { startTapProxy } from '../../scripts/tap-proxy';
import { DEFAULT_CHUNK_SIZE } from '../../extension/core/crypto/stream';
import { offerToWire, type OfferMessage, type Result } from '../../extension/core/protocol';
import { Identity } from '../../extension/core/crypto/identity';
import { newTransferId, sealOffer, signReceipt } from '../../extension/core/crypto/envelope';
import { rawConnect, rawJoin, waitFor, type RawConnection } from '../helpers/raw';
import type { TransferListener } from '../../extension/core/client';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** Counts the chunks a sender sends and keeps the offers it makes. */
function spySender(peer: Peer) {
  let chunks = 0;
  const offers: OfferMessage[] = [];
  const sendChunk = peer.client.sendChunk.bind(peer.client);
  peer.client.sendChunk = (id, index, data) => {
    chunks += 1;
    sendChunk(id, index, data);
  };
  const resumedAt: number[] = [];
  const offer = peer.client.offer.bind(peer.client);
  peer.client.offer = (message) => {
    offers.push(message);
    if (message.resume !== undefined) resumedAt.push(Date.now());
    return offer(message);
  };
  return { chunks: () => chunks, offers, resumedAt };
}

/**
 * Records what a receiver is handed (chunk indices, in order) and the resume points it answers
 * with. `slow`: chunks reach the receiver one every few milliseconds while it is set, and those not
 * handed over when its transfer is cut off are lost, as data in flight is on a real network.
 */
function spyReceiver(peer: Peer, options: { slow?: () => boolean } = {}) {
  const indices: number[] = [];
  const resumeFrom: number[] = [];
  const answer = peer.client.answer.bind(peer.client);
  peer.client.answer = (id, accept, from) => {
    if (from !== undefined) resumeFrom.push(from);
    return answer(id, accept, from);
  };
  const register = peer.client.register.bind(peer.client);
  peer.client.register = (id, listener) => {
    if (!listener.chunk) return register(id, listener);
    let pending: Array<[number, Buffer]> = [];
    let timer: NodeJS.Timeout | undefined;
    const hand = (index: number, data: Buffer) => {
      indices.push(index);
      listener.chunk!(index, data);
    };
    const pump = () => {
      timer = undefined;
      const next = pending.shift();
      if (next) hand(...next);
      if (pending.length > 0) timer = setTimeout(pump, 4);
    };
    const drop = () => {
      pending = [];
      clearTimeout(timer);
      timer = undefined;
    };
    const wrapped: TransferListener = {
      ...listener,
      chunk: (index, data) => {
        if (!options.slow?.() && pending.length === 0) return hand(index, data);
        pending.push([index, data]);
        timer ??= setTimeout(pump, 4);
      },
      cancel: (code, message, from) => {
        drop();
        listener.cancel?.(code, message, from);
      },
      disconnected: () => {
        drop();
        listener.disconnected?.();
      },
    };
    return register(id, wrapped);
  };
  return { indices, resumeFrom };
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * Alice sends one file of `chunkCount` chunks (less `trim` bytes) to Bob and Carol, with one
 * connection (Bob's or her own) through a tap that is cut once Bob has acknowledged `cutAt`
 * chunks. Both deliveries must succeed byte for byte; what the spies saw is returned.
 */
async function sendToTwoAndCut(o: { cut: 'alice' | 'bob'; chunkCount: number; chunkSize?: number; trim?: number; cutAt: number; window?: number; carolLagsUntilCut?: boolean }) {
  const h = await Harness.start(o.window ? { window: o.window } : {});
  cleanups.push(() => h.close());
  const tap = await startTapProxy(h.url, () => undefined);
  cleanups.push(() => tap.close());
  const through = (who: 'alice' | 'bob') => (o.cut === who ? { url: tap.url } : {});
  const alice = await h.peer('alice', { reconnect: true, ...through('alice') });
  const bob = await h.peer('bob', { reconnect: true, ...through('bob') });
  const carol = await h.peer('carol', { reconnect: true });
  await h.until(() => alice.client.peers.has(bob.identity.peerId) && alice.client.peers.has(carol.identity.peerId));
  const src = await h.tempDir();
  const outBob = await h.tempDir();
  const outCarol = await h.tempDir();
  const chunkSize = o.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const sum = await writeRandomFile(path.join(src, 'two.bin'), o.chunkCount * chunkSize - (o.trim ?? 0), 'two');
  const sender = spySender(alice);
  let cut = false;
  const bobSpy = spyReceiver(bob);
  const carolSpy = spyReceiver(carol, o.carolLagsUntilCut ? { slow: () => !cut } : {});
  let written = 0;
  const ack = bob.client.ack.bind(bob.client);
  bob.client.ack = (id, index) => {
    ack(id, index);
    if (++written === o.cutAt) {
      cut = true;
      tap.cut();
    }
  };
  const toBob = bob.nextOffer().then((offer) => offer.accept({ directory: outBob }));
  const toCarol = carol.nextOffer().then((offer) => offer.accept({ directory: outCarol }));
  const sent = await sendFiles(alice.client, { paths: [path.join(src, 'two.bin')], to: [alice.client.findPeer('bob'), alice.client.findPeer('carol')], chunkSize });
  assert.deepEqual(
    sent.recipients.map((r) => r.outcome),
    ['done', 'done'],
    JSON.stringify(sent.recipients),
  );
  await Promise.all([toBob, toCarol]);
  assert.equal(await sha256File(path.join(outBob, 'two.bin')), sum);
  assert.equal(await sha256File(path.join(outCarol, 'two.bin')), sum);
  assert.deepEqual(await listTree(outBob), ['two.bin']);
  return { bob, sender, bobSpy, carolSpy };
}

test("two recipients, one recipient's network drops mid-transfer: the other goes on, the cut one resumes from its own position", async () => {
  const chunkCount = 100;
  // Bob's connection is cut once he has written 40 chunks.
  const { bob, sender, bobSpy, carolSpy } = await sendToTwoAndCut({ cut: 'bob', chunkCount, cutAt: 40 });

  // The re-offer went to bob alone (carol was done), under a new attempt.
  const again = sender.offers.filter((o) => o.resume !== undefined);
  assert.ok(again.length >= 1, 'the transfer was offered again');
  for (const o of again) assert.deepEqual(o.resumeTo, [bob.identity.peerId]);
  assert.equal(carolSpy.resumeFrom.length, 0, 'carol was not asked to resume');
  assert.deepEqual(carolSpy.indices, range(chunkCount), 'carol got each chunk once');
  // Bob resumed, not from zero, and got each chunk once, the resumed ones from his own position.
  assert.equal(bobSpy.resumeFrom.length, 1);
  const from = bobSpy.resumeFrom[0]!;
  assert.ok(from >= 40 && from < chunkCount, `bob resumed from chunk ${from}`);
  assert.deepEqual(bobSpy.indices, range(chunkCount), 'bob got each chunk once');
  assert.equal(sender.chunks(), chunkCount + (chunkCount - from), 'only the chunks bob lacked were sent again');
});

test("two recipients, the sender's network drops mid-transfer: both legs resume, each exactly from its own position", async () => {
  const chunkCount = 120;
  // Carol lags behind bob until the cut (her chunks trickle in), so the two positions differ.
  // Chunks of 256 KiB, so that the sender's window (32 of them) leaves room for that lag.
  const { sender, bobSpy, carolSpy } = await sendToTwoAndCut({ cut: 'alice', chunkCount, chunkSize: 256 * 1024, trim: 7, cutAt: 50, window: 32, carolLagsUntilCut: true });

  // Offered again to both (no resumeTo: every recipient), each answering with its own position.
  const again = sender.offers.filter((o) => o.resume !== undefined);
  assert.ok(again.length >= 1 && again.every((o) => o.resumeTo === undefined));
  assert.equal(bobSpy.resumeFrom.length, 1);
  assert.equal(carolSpy.resumeFrom.length, 1);
  const [bobFrom, carolFrom] = [bobSpy.resumeFrom[0]!, carolSpy.resumeFrom[0]!];
  assert.ok(bobFrom >= 50, `bob resumed from chunk ${bobFrom}`);
  assert.ok(carolFrom > 0 && carolFrom < bobFrom, `carol resumed from chunk ${carolFrom}, behind bob (${bobFrom})`);
  // Neither got a chunk twice: bob's first chunk after the resume was exactly his resume point.
  assert.deepEqual(bobSpy.indices, range(chunkCount), 'bob got each chunk once');
  assert.deepEqual(carolSpy.indices, range(chunkCount), 'carol got each chunk once');
  assert.ok(sender.chunks() < 2 * chunkCount - carolFrom + 1, `sent ${sender.chunks()} chunks: the resumed stream started at carol's position`);
});

test('two recipients, one never comes back: its leg ends in EXPIRED, the other is delivered', async () => {
  const h = await Harness.start({ resumeGraceMs: 1500 });
  cleanups.push(() => h.close());
  const alice = await h.peer('alice', { reconnect: true });
  const bob = await h.peer('bob', { reconnect: true });
  const carol = await h.peer('carol', { reconnect: true });
  await h.until(() => alice.client.peers.has(bob.identity.peerId) && alice.client.peers.has(carol.identity.peerId));
  const src = await h.tempDir();
  const outBob = await h.tempDir();
  const outCarol = await h.tempDir();
  const sum = await writeRandomFile(path.join(src, 'gone.bin'), 60 * DEFAULT_CHUNK_SIZE, 'gone');
  // Carol vanishes for good after ten chunks.
  let written = 0;
  const ack = carol.client.ack.bind(carol.client);
  carol.client.ack = (id, index) => {
    ack(id, index);
    if (++written === 10) carol.client.close();
  };
  const toBob = bob.nextOffer().then((o) => o.accept({ directory: outBob }));
  const toCarol = carol.nextOffer().then((o) => o.accept({ directory: outCarol }));
  const sent = await sendFiles(alice.client, { paths: [path.join(src, 'gone.bin')], to: [alice.client.findPeer('bob'), alice.client.findPeer('carol')] });
  const [toB, toC] = sent.recipients;
  assert.equal(toB!.outcome, 'done', JSON.stringify(toB));
  assert.equal(toC!.outcome === 'failed' && toC!.code, 'EXPIRED', JSON.stringify(toC));
  await toBob;
  assert.equal(await sha256File(path.join(outBob, 'gone.bin')), sum);
  await assert.rejects(toCarol, { code: 'EXPIRED' });
  assert.deepEqual(await listTree(outCarol), [], "carol's partial file was removed");
});

test('the relay refuses a resume naming a leg that was not interrupted, and never offers a delivered leg again', async () => {
  const h = await Harness.start();
  cleanups.push(() => h.close());
  const alice = await h.peer('alice');
  const bob = await h.peer('bob');
  const carol = await h.peer('carol');
  const dave = await h.peer('dave');
  await h.until(() => [bob, carol, dave].every((p) => alice.client.peers.has(p.identity.peerId)));
  const src = await h.tempDir();
  const out = await h.tempDir();
  await writeRandomFile(path.join(src, 'once.bin'), 5 * DEFAULT_CHUNK_SIZE, 'once');
  const sender = spySender(alice);
  const toBob = bob.nextOffer().then((o) => o.accept({ directory: out }));
  const toCarol = carol.nextOffer().then((o) => o.decline());
  const sent = await sendFiles(alice.client, { paths: [path.join(src, 'once.bin')], to: [alice.client.findPeer('bob'), alice.client.findPeer('carol')] });
  await Promise.all([toBob, toCarol]);
  assert.deepEqual(
    sent.recipients.map((r) => r.outcome),
    ['done', 'declined'],
  );
  const original = sender.offers[0]!;
  const [bobId, carolId, daveId] = [bob, carol, dave].map((p) => p.identity.peerId);

  // A leg that was declined (not cut off by a dropped connection) cannot be resumed.
  await assert.rejects(alice.client.offer({ ...original, resume: 3, resumeTo: [carolId!] }), { code: 'DUPLICATE_TRANSFER' });
  // Nor one that is not a recipient of the offer, nor a resumeTo without a resume.
  await assert.rejects(alice.client.offer({ ...original, resume: 3, resumeTo: [daveId!] }), { code: 'BAD_MESSAGE' });
  await assert.rejects(alice.client.offer({ ...original, resumeTo: [bobId!] }), { code: 'BAD_MESSAGE' });
  // Every recipient named, one of them declined: refused as a whole.
  await assert.rejects(alice.client.offer({ ...original, resume: 3 }), { code: 'DUPLICATE_TRANSFER' });

  // A delivered leg is not offered again: the relay tells the sender of its receipt instead.
  const offersToBob: OfferMessage[] = [];
  bob.client.on('offer', (o) => offersToBob.push(o));
  const heard: string[] = [];
  const stop = alice.client.register(original.transferId, {
    answer: (m) => heard.push(`answer ${m.from} ${m.resumeFrom}`),
    done: (m) => heard.push(`done ${m.from}`),
  });
  await alice.client.offer({ ...original, resume: 4, resumeTo: [bobId!] });
  await h.until(() => heard.length === 2);
  stop();
  assert.deepEqual(heard, [`answer ${bobId} 5`, `done ${bobId}`]);
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(offersToBob, [], 'bob was not offered the transfer again');
  // And someone else's transfer cannot be resumed at all.
  await assert.rejects(carol.client.offer({ ...original, resume: 5, resumeTo: [bobId!] }), { code: 'NOT_PARTICIPANT' });
});

test('two recipients, one drops while the other takes longer than the grace period: it is not lost, it resumes once the other is done', async () => {
  const graceMs = 2_000;
  const h = await Harness.start({ resumeGraceMs: graceMs });
  cleanups.push(() => h.close());
  const tap = await startTapProxy(h.url, () => undefined);
  cleanups.push(() => tap.close());
  const alice = await h.peer('alice', { reconnect: true });
  const bob = await h.peer('bob', { reconnect: true, url: tap.url });
  const carol = await h.peer('carol', { reconnect: true });
  await h.until(() => alice.client.peers.has(bob.identity.peerId) && alice.client.peers.has(carol.identity.peerId));
  const src = await h.tempDir();
  const outBob = await h.tempDir();
  const outCarol = await h.tempDir();
  const chunkCount = 40;
  const sum = await writeRandomFile(path.join(src, 'long.bin'), chunkCount * DEFAULT_CHUNK_SIZE, 'long');
  const sender = spySender(alice);
  // Carol acknowledges slowly, one chunk every 150 ms, her final `done` after her last
  // acknowledgement: her leg runs for several grace periods.
  let carolsPace = Promise.resolve();
  const paced = <T>(send: () => T) => (carolsPace = carolsPace.then(() => new Promise((r) => setTimeout(r, 150))).then(send).then(() => undefined));
  const carolAck = carol.client.ack.bind(carol.client);
  carol.client.ack = (id, index) => void paced(() => carolAck(id, index));
  const carolDone = carol.client.done.bind(carol.client);
  carol.client.done = (id, receipt) => paced(() => carolDone(id, receipt));
  // Bob's connection is cut early; his client reconnects at once, and he waits for the sender.
  let cutAt = 0;
  let written = 0;
  const bobAck = bob.client.ack.bind(bob.client);
  bob.client.ack = (id, index) => {
    bobAck(id, index);
    if (++written === 3) {
      cutAt = Date.now();
      tap.cut();
    }
  };
  const toBob = bob.nextOffer().then((o) => o.accept({ directory: outBob }));
  const toCarol = carol.nextOffer().then((o) => o.accept({ directory: outCarol }));
  const sent = await sendFiles(alice.client, { paths: [path.join(src, 'long.bin')], to: [alice.client.findPeer('bob'), alice.client.findPeer('carol')] });
  assert.deepEqual(
    sent.recipients.map((r) => r.outcome),
    ['done', 'done'],
    JSON.stringify(sent.recipients),
  );
  await Promise.all([toBob, toCarol]);
  assert.equal(await sha256File(path.join(outBob, 'long.bin')), sum);
  assert.equal(await sha256File(path.join(outCarol, 'long.bin')), sum);
  // The case this is about: Bob was offered the transfer again only after more than a grace period.
  const again = sender.offers.filter((o) => o.resume !== undefined);
  assert.ok(again.length >= 1, 'bob was offered the transfer again');
  assert.ok(cutAt > 0 && sender.resumedAt[0]! - cutAt > graceMs, `re-offered ${sender.resumedAt[0]! - cutAt} ms after the cut (grace ${graceMs} ms)`);
});

/**
 * Raw clients, so that the order of the rounds is set by the test, not by a sender's timers. Alice
 * offers 4 chunks to Bob and Carol, both accept, one chunk goes out, then both connections drop.
 * Bob comes back and Alice resumes naming him only: that round runs (Bob accepted), while Carol's
 * leg waits for a later one. Carol is away.
 */
async function roundWithOneLegWaiting() {
  const h = await Harness.start({ resumeGraceMs: 30_000 });
  cleanups.push(() => h.close());
  const [alice, bob, carol] = [Identity.generate(), Identity.generate(), Identity.generate()];
  /** `listen` is attached before joining: pending cancels come before the join's reply. */
  const join = async (who: Identity, name: string, listen?: (conn: RawConnection) => void) => {
    const conn = await rawConnect(h.url);
    listen?.(conn);
    assert.equal((await rawJoin(conn, who, name)).ok, true);
    cleanups.push(async () => conn.close());
    return conn;
  };
  const s = await join(alice, 'alice');
  let b = await join(bob, 'bob');
  const c = await join(carol, 'carol');
  const chunkSize = 64;
  const chunkCount = 4;
  const transferId = newTransferId();
  const { offer, layout } = sealOffer({
    sender: alice,
    recipients: [bob.publicIdentity, carol.publicIdentity],
    transferId,
    createdAt: Date.now(),
    header: { v: 1, entries: [{ path: 'r.bin', type: 'file', size: chunkCount * chunkSize }], chunkSize, plainBytes: chunkCount * chunkSize },
  });
  const wire = offerToWire(offer);
  const chunk = Buffer.alloc(chunkSize + 16);
  const answers: unknown[] = [];
  const cancels: Array<{ code: string; from?: string }> = [];
  s.socket.on('answer', (m: unknown) => answers.push(m));
  s.socket.on('cancel', (m: { code: string; from?: string }) => cancels.push(m));
  const accept = (conn: RawConnection, resumeFrom?: number) =>
    new Promise<void>((resolve) =>
      conn.socket.once('offer', () => {
        conn.socket.emit('answer', { transferId, accept: true, ...(resumeFrom !== undefined ? { resumeFrom } : {}) }, () => undefined);
        resolve();
      }),
    );
  const offerAgain = async (round: number, to: string[]) => (await s.socket.timeout(5000).emitWithAck('offer', { ...wire, resume: round, resumeTo: to })) as Result;
  const bothAccepted = Promise.all([accept(b), accept(c)]);
  assert.equal(((await s.socket.timeout(5000).emitWithAck('offer', wire)) as Result).ok, true);
  await bothAccepted;
  await waitFor(() => answers.length === 2);
  s.socket.emit('chunk', transferId, 0, chunk);
  b.close();
  c.close();
  await waitFor(() => h.relay!.stats().transfers === 0);
  b = await join(bob, 'bob');
  const bobAccepted = accept(b, 0);
  assert.equal((await offerAgain(1, [bob.peerId])).ok, true);
  await bobAccepted;
  await waitFor(() => answers.length === 3);
  /** Bob's round to its end: every chunk, acknowledged, then his receipt. */
  const finishBob = async () => {
    for (let i = 0; i < chunkCount; i++) {
      s.socket.emit('chunk', transferId, i, chunk);
      b.socket.emit('ack', { transferId, index: i });
      await new Promise((r) => setTimeout(r, 20));
    }
    const receipt = signReceipt(bob, { transferId, senderPeerId: alice.peerId, chunkCount, cipherBytes: layout.cipherBytes });
    assert.equal(((await b.socket.timeout(5000).emitWithAck('done', { transferId, receipt: receipt.toString('base64url') })) as Result).ok, true);
    await waitFor(() => h.relay!.stats().transfers === 0);
  };
  return { h, s, b, alice, carol, transferId, wire, join, accept, offerAgain, finishBob, cancels };
}

test('relay: a resume naming one waiting leg keeps the other resumable for a later round', async () => {
  const { s, carol, wire, join, accept, offerAgain, finishBob } = await roundWithOneLegWaiting();
  await finishBob();
  // Round 2: Carol is back; her leg is still one the relay knows as interrupted.
  const c = await join(carol, 'carol');
  // A resume is not charged against the byte budget again, so it must declare the sizes of the
  // transfer it continues: a thousand times as many chunks is refused.
  const inflated = { ...wire, resume: 2, resumeTo: [carol.peerId], chunkCount: 4000, cipherBytes: 4000 * (64 + 16) };
  const refused = (await s.socket.timeout(5000).emitWithAck('offer', inflated)) as Result;
  assert.equal(refused.ok ? 'accepted' : refused.error.code, 'SIZE_MISMATCH');
  const carolOffered = accept(c, 1);
  const reply = await offerAgain(2, [carol.peerId]);
  assert.equal(reply.ok, true, JSON.stringify(reply));
  await carolOffered;
});

test("relay: a recipient calls off its leg that waits for a later round while another round runs", async () => {
  const { s, carol, transferId, join, offerAgain, finishBob, cancels } = await roundWithOneLegWaiting();
  const c = await join(carol, 'carol');
  const reply = (await c.socket.timeout(5000).emitWithAck('cancel', { transferId, code: 'CANCELLED' })) as Result;
  assert.equal(reply.ok, true, JSON.stringify(reply));
  // (The drops before were PEER_GONE.)
  await waitFor(() => cancels.some((m) => m.code === 'CANCELLED'));
  assert.deepEqual(cancels.filter((m) => m.code === 'CANCELLED').map((m) => m.from), [carol.peerId]);
  assert.ok(s.socket.connected, 'the sender is not told it misbehaved');
  await finishBob();
  // Her leg is gone: it cannot be offered again.
  const again = await offerAgain(2, [carol.peerId]);
  assert.equal(again.ok ? 'accepted' : again.error.code, 'DUPLICATE_TRANSFER');
});

test("relay: the sender's cancel of a running round reaches the leg waiting for a later one, though its recipient is away", async () => {
  const { h, s, b, alice, carol, transferId, join, offerAgain } = await roundWithOneLegWaiting();
  const bobHeard: Array<{ code: string; from?: string }> = [];
  b.socket.on('cancel', (m: { code: string; from?: string }) => bobHeard.push(m));
  assert.equal(((await s.socket.timeout(5000).emitWithAck('cancel', { transferId, code: 'CANCELLED' })) as Result).ok, true);
  await waitFor(() => bobHeard.length === 1 && h.relay!.stats().transfers === 0);
  assert.deepEqual({ code: bobHeard[0]!.code, from: bobHeard[0]!.from }, { code: 'CANCELLED', from: alice.peerId });
  // Carol comes back within the grace period: she hears CANCELLED now, not EXPIRED later.
  const carolHeard: Array<{ transferId: string; code: string; from?: string }> = [];
  await join(carol, 'carol', (conn) => conn.socket.on('cancel', (m: { transferId: string; code: string; from?: string }) => carolHeard.push(m)));
  await waitFor(() => carolHeard.length === 1);
  assert.deepEqual(carolHeard[0], { transferId, code: 'CANCELLED', message: 'Cancelled.', from: alice.peerId });
  const again = await offerAgain(2, [carol.peerId]);
  assert.equal(again.ok ? 'accepted' : again.error.code, 'DUPLICATE_TRANSFER');
});
