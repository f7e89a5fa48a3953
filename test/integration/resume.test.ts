/**
 * Dropped connections: a relay restarted mid-transfer, a receiver's network cut, and a peer that
 * does not come back within the grace period. Real relays, real clients that reconnect on their
 * own, real files; the network cut is a TCP proxy that drops every connection through it.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Harness, listTree, sha256File, writeRandomFile, type Peer } from '../helpers/harness';
import { createRelay, type RelayOptions } from '../../server/relay';
import { sendFiles } from '../../extension/core/transfer/sender';
import { startTapProxy } from '../../scripts/tap-proxy';
import { cancelWhileAway } from '../helpers/away';
import { slowAfterResume } from '../helpers/pacing';
import { DEFAULT_CHUNK_SIZE } from '../../extension/core/crypto/stream';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/**
 * Counts the chunks and offers a client sends (a resume does not start again from zero, and it
 * did happen), and runs `at[n]` right after the n-th chunk.
 */
function spy(peer: Peer, at: Record<number, () => void> = {}) {
  let chunks = 0;
  let offers = 0;
  const sendChunk = peer.client.sendChunk.bind(peer.client);
  peer.client.sendChunk = (id, index, data) => {
    sendChunk(id, index, data);
    at[++chunks]?.();
  };
  const offer = peer.client.offer.bind(peer.client);
  peer.client.offer = (message) => {
    offers += 1;
    return offer(message);
  };
  return { chunks: () => chunks, offers: () => offers };
}

/**
 * A relay, Alice and Bob joined (reconnecting on their own) and seeing each other, and two
 * folders; with `throughTap`, that peer connects through a TCP proxy the test can cut.
 */
async function pair(options: RelayOptions, throughTap?: 'alice' | 'bob') {
  const h = await Harness.start(options);
  cleanups.push(() => h.close());
  const tap = await startTapProxy(h.url, () => undefined);
  cleanups.push(() => tap.close());
  const alice = await h.peer('alice', { reconnect: true, ...(throughTap === 'alice' ? { url: tap.url } : {}) });
  const bob = await h.peer('bob', { reconnect: true, ...(throughTap === 'bob' ? { url: tap.url } : {}) });
  await h.until(() => alice.client.peers.has(bob.identity.peerId));
  return { h, tap, alice, bob, src: await h.tempDir(), out: await h.tempDir() };
}

test('the relay restarts mid-transfer: both ends reconnect and the transfer resumes from the last verified chunk', async () => {
  const h = await Harness.start();
  cleanups.push(() => h.close());
  const port = Number(new URL(h.url).port);
  const alice = await h.peer('alice', { reconnect: true });
  const bob = await h.peer('bob', { reconnect: true });
  await h.until(() => alice.client.peers.has(bob.identity.peerId));
  const src = await h.tempDir();
  const out = await h.tempDir();
  const size = 120 * DEFAULT_CHUNK_SIZE + 99;
  const sum = await writeRandomFile(path.join(src, 'resumed.bin'), size, 'resume');
  let restarted: Promise<void> | undefined;
  const sender = spy(alice, {
    40: () => {
      restarted = (async () => {
        await h.relay!.stop();
        h.relay = createRelay({ port });
        await h.relay.start();
      })();
    },
  });
  const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
  const sent = await sendFiles(alice.client, { paths: [path.join(src, 'resumed.bin')], to: [alice.client.findPeer('bob')] });
  await restarted;
  assert.ok(sender.offers() >= 2, 'the transfer was offered again after the restart');
  assert.equal(sent.recipients[0]!.outcome, 'done', JSON.stringify(sent.recipients[0]));
  await received;
  assert.equal(await sha256File(path.join(out, 'resumed.bin')), sum);
  assert.deepEqual(await listTree(out), ['resumed.bin']);
  const chunkCount = 121;
  assert.ok(sender.chunks() < chunkCount + 2 * 16, `sent ${sender.chunks()} chunks for ${chunkCount}: resumed, not restarted from zero`);
});

test("the receiver's network drops mid-transfer: it reconnects and the transfer resumes", async () => {
  const { tap, alice, bob, src, out } = await pair({}, 'bob');
  const size = 100 * DEFAULT_CHUNK_SIZE;
  const sum = await writeRandomFile(path.join(src, 'cut.bin'), size, 'cut');
  const sender = spy(alice);
  // Bob's connection is cut once he has written half the file.
  let written = 0;
  const ack = bob.client.ack.bind(bob.client);
  bob.client.ack = (id, index) => {
    ack(id, index);
    if (++written === 50) tap.cut();
  };
  const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
  const sent = await sendFiles(alice.client, { paths: [path.join(src, 'cut.bin')], to: [alice.client.findPeer('bob')] });
  assert.ok(sender.offers() >= 2, 'the transfer was offered again after the cut (retried until bob was back)');
  assert.equal(sent.recipients[0]!.outcome, 'done', JSON.stringify(sent.recipients[0]));
  await received;
  assert.equal(await sha256File(path.join(out, 'cut.bin')), sum);
  assert.ok(sender.chunks() < 100 + 2 * 16, `sent ${sender.chunks()} chunks for 100`);
});

test('a peer that does not come back within the grace period: both sides see EXPIRED, nothing partial remains', async () => {
  const { alice, bob, src, out } = await pair({ resumeGraceMs: 500 });
  await writeRandomFile(path.join(src, 'gone.bin'), 60 * DEFAULT_CHUNK_SIZE, 'gone');
  // The sender vanishes for good once bob has written ten chunks.
  let written = 0;
  const ack = bob.client.ack.bind(bob.client);
  bob.client.ack = (id, index) => {
    ack(id, index);
    if (++written === 10) alice.client.close();
  };
  const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
  const sending = sendFiles(alice.client, { paths: [path.join(src, 'gone.bin')], to: [alice.client.findPeer('bob')] });
  await assert.rejects(received, { code: 'EXPIRED' });
  assert.deepEqual(await listTree(out), [], 'the partial file was removed');
  const sent = await sending;
  const leg = sent.recipients[0]!;
  assert.equal(leg.outcome === 'failed' && leg.code, 'EXPIRED');
});

test('a sender that cancels while the transfer waits to be resumed: the recipient learns CANCELLED at once, not EXPIRED later', async () => {
  const events: Array<Record<string, unknown>> = [];
  // A grace period far longer than the test may take: only the relay's notice can end it in time.
  const { h, tap, alice, bob, src, out } = await pair({ resumeGraceMs: 120_000, auditLog: { write: (e) => void events.push(e as Record<string, unknown>), close: async () => undefined } }, 'alice');
  await writeRandomFile(path.join(src, 'called-off.bin'), 80 * DEFAULT_CHUNK_SIZE, 'called-off');
  // Alice's connection is cut mid-transfer; back, she cancels instead of offering it again.
  const controller = new AbortController();
  spy(alice, { 30: () => tap.cut() });
  const offer = alice.client.offer.bind(alice.client);
  alice.client.offer = (message) => {
    if (message.resume) controller.abort();
    return offer(message);
  };
  const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
  const sent = await sendFiles(alice.client, { paths: [path.join(src, 'called-off.bin')], to: [alice.client.findPeer('bob')], signal: controller.signal });
  const leg = sent.recipients[0]!;
  assert.equal(leg.outcome === 'failed' && leg.code, 'CANCELLED', JSON.stringify(leg));
  await assert.rejects(received, (error: { code?: string }) => {
    assert.equal(error.code, 'CANCELLED');
    return true;
  });
  assert.deepEqual(await listTree(out), [], 'the partial file was removed');
  const cancels = events.filter((e) => e.event === 'cancel');
  assert.equal(cancels.length, 1, JSON.stringify(events));
  assert.equal(cancels[0]!.by, alice.identity.peerId);
  // The relay holds nothing for it any more (its re-offer, sent after the cancel, was refused).
  assert.equal(h.relay!.stats().transfers, 0);
});

test("an offer still unanswered when the recipient's network drops is taken down, then asked again once it is back", async () => {
  const { tap, alice, bob, src, out } = await pair({}, 'bob');
  const sum = await writeRandomFile(path.join(src, 'asked-twice.bin'), 3 * DEFAULT_CHUNK_SIZE + 5, 'asked-twice');
  const withdrawn = new Promise<{ code: string }>((resolve) => bob.inbox.once('withdrawn', (w) => resolve(w.error)));
  const sent = sendFiles(alice.client, { paths: [path.join(src, 'asked-twice.bin')], to: [alice.client.findPeer('bob')] });
  // Bob's prompt is up, unanswered, when his connection drops.
  const first = await bob.nextOffer();
  const secondOffer = bob.nextOffer();
  tap.cut();
  assert.equal((await withdrawn).code, 'PEER_GONE');
  await assert.rejects(first.accept({ directory: out }), { code: 'PEER_GONE' }, 'the first prompt can no longer be answered');
  // Back online, he is asked again: the same transfer, and this time he accepts.
  const again = await secondOffer;
  assert.equal(again.transferId, first.transferId);
  await again.accept({ directory: out });
  const result = await sent;
  assert.equal(result.recipients[0]!.outcome, 'done', JSON.stringify(result.recipients[0]));
  assert.equal(await sha256File(path.join(out, 'asked-twice.bin')), sum);
});

test('a sender that cancels while the recipient is away: the recipient learns CANCELLED when it is back, not EXPIRED later', async () => {
  const { h, tap, alice, bob } = await pair({ resumeGraceMs: 120_000 }, 'bob');
  await cancelWhileAway(h, { alice, bob, tap, away: 'bob' });
});

test('a recipient that calls off a transfer while its sender is away: the sender learns CANCELLED when it is back, and does not offer it again', async () => {
  const { h, tap, alice, bob } = await pair({ resumeGraceMs: 120_000 }, 'alice');
  await cancelWhileAway(h, { alice, bob, tap, away: 'alice' });
});

test('a recipient waiting for a sender that is back online but never offers the transfer again: the relay ends the wait with EXPIRED', async () => {
  const graceMs = 2_000;
  const h = await Harness.start({ resumeGraceMs: graceMs });
  cleanups.push(() => h.close());
  const alice = await h.peer('alice');
  const bob = await h.peer('bob', { reconnect: true });
  await h.until(() => alice.client.peers.has(bob.identity.peerId));
  const src = await h.tempDir();
  const out = await h.tempDir();
  await writeRandomFile(path.join(src, 'forgotten.bin'), 40 * DEFAULT_CHUNK_SIZE, 'forgotten');
  let written = 0;
  const ack = bob.client.ack.bind(bob.client);
  const gone = new Promise<void>((resolve) => {
    bob.client.ack = (id, index) => {
      ack(id, index);
      if (++written === 3) resolve();
    };
  });
  const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
  received.catch(() => undefined); // Asserted below.
  void sendFiles(alice.client, { paths: [path.join(src, 'forgotten.bin')], to: [alice.client.findPeer('bob')] }).catch(() => undefined);
  // Alice's process dies mid-transfer, and she is back at once in a process that knows nothing of it.
  await gone;
  alice.client.close();
  const again = await h.peer('alice', { identity: alice.identity });
  await h.until(() => bob.client.peers.has(again.identity.peerId), 10_000);
  const started = Date.now();
  // Bob, seeing her online, goes on waiting past his own timer; the relay's notice ends it.
  await assert.rejects(received, (error: { code?: string; message?: string }) => {
    assert.equal(error.code, 'EXPIRED');
    assert.match(error.message ?? '', /not resumed within the grace period/);
    return true;
  });
  assert.ok(Date.now() - started < 10 * graceMs, 'ended by the relay, well before the receiver\'s own limit');
  assert.deepEqual(await listTree(out), [], 'the partial file was removed');
});

test('a resumed transfer that runs on for longer than the grace period is not cut off by it', async () => {
  const graceMs = 1_500;
  const { tap, alice, bob, src, out } = await pair({ resumeGraceMs: graceMs }, 'bob');
  const sum = await writeRandomFile(path.join(src, 'long-after.bin'), 30 * DEFAULT_CHUNK_SIZE, 'long-after');
  // Bob is cut off once, early; after the resume he acknowledges slowly (150 ms a chunk, his
  // `done` after his last acknowledgement), so the rest takes several grace periods.
  slowAfterResume(bob, 150, { beforeResume: (n) => n === 3 && tap.cut() });
  const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
  const started = Date.now();
  const sent = await sendFiles(alice.client, { paths: [path.join(src, 'long-after.bin')], to: [alice.client.findPeer('bob')] });
  assert.equal(sent.recipients[0]!.outcome, 'done', JSON.stringify(sent.recipients[0]));
  await received;
  assert.ok(Date.now() - started > 2 * graceMs, 'the resumed part outlasted the grace period');
  assert.equal(await sha256File(path.join(out, 'long-after.bin')), sum);
});
