/**
 * Several relay nodes joined through a real redis-server: presence, offers, answers, chunks,
 * cancellation, replacement of a duplicate connection, and a node that stops mid-transfer, with
 * clients on different nodes. Two relays run in this process (port 0); a small TCP balancer
 * stands in for the load balancer when a client must land on another node after a stop.
 */
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Harness, listTree, sha256File, writeRandomFile, type Peer } from '../helpers/harness';
import { startRedis, type RedisServer } from '../../scripts/redis-server';
import { startBalancer } from '../helpers/balancer';
import { run, startRelayProcess } from '../helpers/processes';
import { createRelay, type Relay, type RelayOptions } from '../../server/relay';
import { sendFiles } from '../../extension/core/transfer/sender';
import { Identity } from '../../extension/core/crypto/identity';
import { DEFAULT_CHUNK_SIZE } from '../../extension/core/crypto/stream';
import { newTransferId, sealOffer } from '../../extension/core/crypto/envelope';
import { offerToWire, type Result } from '../../extension/core/protocol';
import { rawConnect, rawJoin, waitFor } from '../helpers/raw';
import { startTapProxy } from '../../scripts/tap-proxy';
import { cancelWhileAway } from '../helpers/away';
import { slowAfterResume } from '../helpers/pacing';

let redis: RedisServer;
const cleanups: Array<() => Promise<unknown>> = [];

before(async () => {
  redis = await startRedis();
});
// Every cluster shares the one Redis, so each test's nodes stop before the next test starts.
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});
after(() => redis?.stop());

/** Two relay nodes on the same Redis, and a harness for peers on either. */
async function cluster(options: RelayOptions = {}, redisUrl = redis.url) {
  const logger = process.env.SFT_TEST_LOG ? (await import('pino')).default({ level: 'debug' }) : undefined;
  const nodes: Relay[] = ['node-a', 'node-b'].map((relayId) => createRelay({ ...options, redis: redisUrl, relayId, ...(logger ? { logger: logger.child({ relayId }) } : {}) }));
  const [a, b] = await Promise.all(nodes.map((n) => n.start()));
  const h = Harness.attach(a!);
  cleanups.push(async () => {
    await h.close();
    for (const n of nodes) await n.stop();
  });
  return { h, a: a!, b: b!, nodes };
}

/** Counts chunks a client sends and runs `at[n]` right after the n-th. */
function onChunk(peer: Peer, at: Record<number, () => void>) {
  let chunks = 0;
  const send = peer.client.sendChunk.bind(peer.client);
  peer.client.sendChunk = (id, index, data) => {
    send(id, index, data);
    at[++chunks]?.();
  };
  return () => chunks;
}

test('presence is the same on both nodes: joins and leaves cross over', async () => {
  const { h, b } = await cluster();
  const alice = await h.peer('alice');
  const bob = await h.peer('bob', { url: b });
  await h.until(() => alice.client.peers.has(bob.identity.peerId) && bob.client.peers.has(alice.identity.peerId));
  const carol = await h.peer('carol');
  await h.until(() => bob.client.peers.has(carol.identity.peerId));
  carol.client.close();
  await h.until(() => !bob.client.peers.has(carol.identity.peerId) && !alice.client.peers.has(carol.identity.peerId));
});

test('a multi-MB transfer between clients on different nodes arrives byte-identical, both ways', async () => {
  const { h, b } = await cluster();
  const alice = await h.peer('alice');
  const bob = await h.peer('bob', { url: b });
  await h.until(() => alice.client.peers.has(bob.identity.peerId));
  await h.sendAndVerify(alice, bob, 24 * 1024 * 1024 + 7);
  await h.sendAndVerify(bob, alice, 3 * DEFAULT_CHUNK_SIZE + 1);
});

test('decline and cancel cross nodes', async () => {
  const { h, b } = await cluster();
  const alice = await h.peer('alice');
  const bob = await h.peer('bob', { url: b });
  await h.until(() => alice.client.peers.has(bob.identity.peerId));
  const src = await h.tempDir();
  const file = path.join(src, 'x.bin');
  await writeRandomFile(file, 40 * DEFAULT_CHUNK_SIZE, 'x');

  void bob.nextOffer().then((o) => o.decline());
  const declined = await sendFiles(alice.client, { paths: [file], to: [alice.client.findPeer('bob')] });
  assert.deepEqual(declined.recipients, [{ peerId: bob.identity.peerId, outcome: 'declined' }]);

  // The sender cancels mid-stream: the recipient on the other node hears it.
  const abort = new AbortController();
  onChunk(alice, { 5: () => abort.abort() });
  const out = await h.tempDir();
  const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
  received.catch(() => undefined); // Asserted below, after the sender's side.
  const cancelled = await sendFiles(alice.client, { paths: [file], to: [alice.client.findPeer('bob')], signal: abort.signal });
  assert.equal(cancelled.recipients[0]!.outcome, 'failed');
  await assert.rejects(received, { code: 'CANCELLED' });
  assert.deepEqual(await listTree(out), []);

  // The recipient cancels: its cancel is forwarded to the sender's node.
  const stop = new AbortController();
  const out2 = await h.tempDir();
  const refused = bob.nextOffer().then((o) => o.accept({ directory: out2, signal: stop.signal }));
  refused.catch(() => undefined);
  let acks = 0;
  const ack = bob.client.ack.bind(bob.client);
  bob.client.ack = (id, index) => {
    ack(id, index);
    if (++acks === 3) stop.abort();
  };
  const sent = await sendFiles(alice.client, { paths: [file], to: [alice.client.findPeer('bob')] });
  const leg = sent.recipients[0]!;
  assert.equal(leg.outcome === 'failed' && leg.code, 'CANCELLED', JSON.stringify(leg));
  await assert.rejects(refused, { code: 'CANCELLED' });
});

test('a cancel made while the recipient is away reaches it when it comes back, though on another node than the transfer', async () => {
  const { h, b } = await cluster({ resumeGraceMs: 120_000 });
  const tap = await startTapProxy(b, () => undefined);
  cleanups.push(() => tap.close());
  // The transfer is held by Alice's node (A); Bob is on node B, through the tap, and comes back
  // there: node A told every node of the cancel.
  const alice = await h.peer('alice');
  const bob = await h.peer('bob', { url: tap.url, reconnect: true });
  await h.until(() => alice.client.peers.has(bob.identity.peerId));
  await cancelWhileAway(h, { alice, bob, tap, away: 'bob' });
});

test('a recipient on another node calls off a transfer that waits for its sender: the sender hears it when it is back', async () => {
  const { h, b } = await cluster({ resumeGraceMs: 120_000 });
  const tap = await startTapProxy(h.url, () => undefined);
  cleanups.push(() => tap.close());
  // Alice's node (A) holds the transfer; she reaches it through the tap. Bob, on node B, calls
  // it off: B forwards the cancel to A.
  const alice = await h.peer('alice', { url: tap.url, reconnect: true });
  const bob = await h.peer('bob', { url: b });
  await h.until(() => alice.client.peers.has(bob.identity.peerId));
  await cancelWhileAway(h, { alice, bob, tap, away: 'alice' });
});

test('the same identity joining on the other node replaces the older connection, without a departure', async () => {
  const { h, b } = await cluster();
  const watcher = await h.peer('watcher');
  const identity = Identity.generate();
  const first = await h.peer('twin', { identity });
  await h.until(() => watcher.client.peers.has(identity.peerId));
  // Any moment at which the watcher stops listing the twin is a departure it was told about.
  let departed = false;
  watcher.client.on('peers', (peers) => (departed ||= !peers.has(identity.peerId)));
  const second = await h.peer('twin', { identity, url: b });
  await h.until(() => first.client.state === 'disconnected');
  assert.equal(second.client.state, 'connected');
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(watcher.client.peers.has(identity.peerId));
  assert.equal(departed, false, 'the replaced connection does not announce a departure');
});

for (const stopped of ['recipient', 'sender'] as const) {
  test(`the ${stopped}'s node stops mid-transfer: it reconnects to the other node and the transfer resumes`, async () => {
    const { h, a, b, nodes } = await cluster();
    // The moving peer dials a balancer that prefers node B, then falls back to node A.
    const lb = await startBalancer([b, a]);
    cleanups.push(() => lb.close());
    const moving = await h.peer(stopped === 'recipient' ? 'bob' : 'alice', { url: lb.url, reconnect: true });
    const staying = await h.peer(stopped === 'recipient' ? 'alice' : 'bob', { reconnect: true });
    const [alice, bob] = stopped === 'recipient' ? [staying, moving] : [moving, staying];
    await h.until(() => alice.client.peers.has(bob.identity.peerId) && bob.client.peers.has(alice.identity.peerId));
    const src = await h.tempDir();
    const out = await h.tempDir();
    const size = 120 * DEFAULT_CHUNK_SIZE + 99;
    const sum = await writeRandomFile(path.join(src, 'moved.bin'), size, stopped);
    let stopping: Promise<void> | undefined;
    const chunks = onChunk(alice, { 40: () => void (stopping = nodes[1]!.stop()) });
    const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
    const sent = await sendFiles(alice.client, { paths: [path.join(src, 'moved.bin')], to: [alice.client.findPeer('bob')] });
    await stopping;
    assert.equal(sent.recipients[0]!.outcome, 'done', JSON.stringify(sent.recipients[0]));
    await received;
    assert.equal(await sha256File(path.join(out, 'moved.bin')), sum);
    assert.deepEqual(await listTree(out), ['moved.bin']);
    assert.ok(chunks() < 121 + 2 * 16, `sent ${chunks()} chunks for 121: resumed, not restarted from zero`);
  });
}

test("a sender that lands on another node while the first lives: the first node's expiry check leaves the resumed transfer alone", async () => {
  const graceMs = 2_000;
  const { h, a, b } = await cluster({ resumeGraceMs: graceMs });
  // Alice dials a balancer, first to node A; Bob stays on node A, which keeps the interrupted
  // transfer listed while it runs on, resumed, on node B.
  const lb = await startBalancer([a, b]);
  cleanups.push(() => lb.close());
  const alice = await h.peer('alice', { url: lb.url, reconnect: true });
  const bob = await h.peer('bob', { reconnect: true });
  await h.until(() => alice.client.peers.has(bob.identity.peerId));
  const src = await h.tempDir();
  const out = await h.tempDir();
  const sum = await writeRandomFile(path.join(src, 'moved-long.bin'), 36 * DEFAULT_CHUNK_SIZE, 'moved-long');
  // After the resume Bob acknowledges slowly (150 ms a chunk, his done after his last
  // acknowledgement), so the resumed part outlasts the grace period twice over.
  const bobPace = slowAfterResume(bob, 150, { beforeResume: (n) => n === 3 && lb.moveTo(1) });
  const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
  const started = Date.now();
  const sent = await sendFiles(alice.client, { paths: [path.join(src, 'moved-long.bin')], to: [alice.client.findPeer('bob')] });
  assert.equal(sent.recipients[0]!.outcome, 'done', JSON.stringify(sent.recipients[0]));
  await received;
  assert.ok(bobPace.resumed(), 'the transfer was resumed');
  assert.ok(Date.now() - started > 2 * graceMs, 'the resumed part outlasted the grace period');
  assert.equal(await sha256File(path.join(out, 'moved-long.bin')), sum);
});

test('two recipients on the same node, the sender on the other: both legs arrive (each recipient has its own leg there)', async () => {
  const { h, b } = await cluster();
  const alice = await h.peer('alice');
  const bob = await h.peer('bob', { url: b });
  const carol = await h.peer('carol', { url: b });
  await h.until(() => alice.client.peers.has(bob.identity.peerId) && alice.client.peers.has(carol.identity.peerId));
  const src = await h.tempDir();
  const file = path.join(src, 'both.bin');
  const sum = await writeRandomFile(file, 12 * DEFAULT_CHUNK_SIZE + 5, 'both');
  const outs = [await h.tempDir(), await h.tempDir()];
  const received = [bob, carol].map((p, i) => p.nextOffer().then((o) => o.accept({ directory: outs[i]! })));
  const sent = await sendFiles(alice.client, { paths: [file], to: [alice.client.findPeer('bob'), alice.client.findPeer('carol')] });
  assert.deepEqual(sent.recipients.map((r) => r.outcome), ['done', 'done'], JSON.stringify(sent.recipients));
  await Promise.all(received);
  for (const out of outs) assert.equal(await sha256File(path.join(out, 'both.bin')), sum);
});

test('a recipient on another node that acknowledges chunks past the end of the transfer is refused and disconnected by its own node', async () => {
  const { a, b } = await cluster();
  const [alice, bob] = [Identity.generate(), Identity.generate()];
  const s = await rawConnect(a);
  const r = await rawConnect(b);
  cleanups.push(async () => {
    s.close();
    r.close();
  });
  assert.equal((await rawJoin(s, alice, 'alice')).ok, true);
  assert.equal((await rawJoin(r, bob, 'bob')).ok, true);
  const transferId = newTransferId();
  const chunkSize = 64;
  const { offer } = sealOffer({
    sender: alice,
    recipients: [bob.publicIdentity],
    transferId,
    createdAt: Date.now(),
    header: { v: 1, entries: [{ path: 'one.bin', type: 'file', size: chunkSize }], chunkSize, plainBytes: chunkSize },
  });
  const offered = new Promise<void>((resolve) => r.socket.once('offer', () => resolve()));
  let reply: Result | undefined;
  for (let i = 0; i < 50 && !reply?.ok; i++) {
    reply = (await s.socket.timeout(5000).emitWithAck('offer', offerToWire(offer))) as Result;
    if (!reply.ok) await new Promise((r2) => setTimeout(r2, 50)); // Until node a lists bob.
  }
  assert.equal(reply?.ok, true, JSON.stringify(reply));
  await offered;
  assert.equal(((await r.socket.timeout(5000).emitWithAck('answer', { transferId, accept: true })) as Result).ok, true);
  // A one-chunk transfer: every acknowledgement from index 1 on is one no sender can cause.
  for (let index = 1; index <= 60 && r.socket.connected; index++) r.socket.emit('ack', { transferId, index });
  await waitFor(() => !r.socket.connected, 5000);
});

test("a recipient cancels a transfer that its sender resumed on another node: the cancel reaches that node, not the stale entry here", async () => {
  const { h, a, b, nodes } = await cluster({ resumeGraceMs: 30_000 });
  const lb = await startBalancer([a, b]);
  cleanups.push(() => lb.close());
  const alice = await h.peer('alice', { url: lb.url, reconnect: true });
  const bob = await h.peer('bob', { reconnect: true }); // On node a, which keeps the interrupted transfer listed.
  await h.until(() => alice.client.peers.has(bob.identity.peerId));
  const src = await h.tempDir();
  const out = await h.tempDir();
  await writeRandomFile(path.join(src, 'called-off.bin'), 40 * DEFAULT_CHUNK_SIZE, 'called-off');
  const stop = new AbortController();
  // Slow after the resume, so that the transfer still runs, on node b, when bob calls it off.
  const bobPace = slowAfterResume(bob, 50, { beforeResume: (n) => n === 3 && lb.moveTo(1), afterResume: (n) => n === 4 && stop.abort() });
  const received = bob.nextOffer().then((o) => o.accept({ directory: out, signal: stop.signal }));
  received.catch(() => undefined);
  const sent = await sendFiles(alice.client, { paths: [path.join(src, 'called-off.bin')], to: [alice.client.findPeer('bob')] });
  assert.ok(bobPace.resumed(), 'the transfer was resumed on node b');
  const leg = sent.recipients[0]!;
  assert.equal(leg.outcome === 'failed' && leg.code, 'CANCELLED', JSON.stringify(leg));
  await assert.rejects(received, { code: 'CANCELLED' });
  assert.deepEqual(await listTree(out), []);
  // Node b, running the resumed transfer, heard it too: nothing is left running anywhere.
  await waitFor(() => nodes.every((n) => n.stats().transfers === 0), 3000);
});

test('the hourly byte budget is kept in Redis: a client that moves to the other node keeps what it used', async () => {
  const { h, b } = await cluster({ maxBytesPerClientPerHour: 3000 });
  const identity = Identity.generate();
  const alice = await h.peer('alice', { identity });
  const bob = await h.peer('bob', { url: b });
  await h.until(() => alice.client.peers.has(bob.identity.peerId));
  const src = await h.tempDir();
  const file = path.join(src, 'small.bin');
  await writeRandomFile(file, 2000);
  void bob.nextOffer().then((o) => o.decline());
  await sendFiles(alice.client, { paths: [file], to: [alice.client.findPeer('bob')] });
  const moved = await h.peer('alice', { identity, url: b });
  await h.until(() => moved.client.peers.has(bob.identity.peerId));
  await assert.rejects(sendFiles(moved.client, { paths: [file], to: [moved.client.findPeer('bob')] }), { code: 'QUOTA_EXCEEDED' });
});

test('offer and join limits are kept in Redis: an identity that spreads over both nodes gets no more than on one', async () => {
  const { a, b } = await cluster({ offersPerClientPerMinute: 3, joinsPerPeerPerMinute: 3 });
  const alice = Identity.generate();
  const join = async (url: string) => {
    const conn = await rawConnect(url);
    cleanups.push(async () => conn.close());
    return { conn, joined: await rawJoin(conn, alice, 'alice') };
  };
  // The limits are checked before the offer is read, so an empty one costs as much as any.
  const offer = async (conn: Awaited<ReturnType<typeof join>>['conn']) => {
    const reply = (await conn.socket.timeout(5000).emitWithAck('offer', {})) as Result;
    return reply.ok ? 'taken' : reply.error.code;
  };
  const first = await join(a);
  assert.equal(first.joined.ok, true);
  assert.deepEqual([await offer(first.conn), await offer(first.conn)], ['BAD_MESSAGE', 'BAD_MESSAGE']);
  const second = await join(b); // Replaces the first connection.
  assert.equal(second.joined.ok, true);
  // Node b has seen one offer of this identity's, but the cluster three: the fourth is refused.
  assert.deepEqual([await offer(second.conn), await offer(second.conn)], ['BAD_MESSAGE', 'RATE_LIMITED']);
  assert.equal((await join(a)).joined.ok, true);
  const fourth = await join(b);
  assert.equal(fourth.joined.ok ? 'joined' : fourth.joined.error.code, 'JOIN_RATE_LIMITED');
});

test('a node killed mid-transfer (no goodbye): its client resumes on the other node, and its peers are announced as gone', async () => {
  // Real sft-relay processes, so that one can die at once (SIGKILL), with a short heartbeat.
  const args = ['--redis', redis.url, '--cluster-heartbeat', '0.3', '--log-level', 'warn'];
  const one = await startRelayProcess(args);
  cleanups.push(() => one.relay.stop());
  const two = await startRelayProcess(args);
  cleanups.push(() => two.relay.stop('SIGKILL'));
  const lb = await startBalancer([two.url, one.url]);
  cleanups.push(() => lb.close());
  const h = Harness.attach(one.url);
  cleanups.push(() => h.close());
  const alice = await h.peer('alice', { reconnect: true });
  const bob = await h.peer('bob', { url: lb.url, reconnect: true });
  const carol = await h.peer('carol', { url: two.url });
  await h.until(() => alice.client.peers.has(bob.identity.peerId) && alice.client.peers.has(carol.identity.peerId) && bob.client.peers.has(alice.identity.peerId));
  await new Promise((r) => setTimeout(r, 700)); // Node one has heard node two's heartbeat with both peers.
  const src = await h.tempDir();
  const out = await h.tempDir();
  const sum = await writeRandomFile(path.join(src, 'killed.bin'), 120 * DEFAULT_CHUNK_SIZE + 5, 'killed');
  const chunks = onChunk(alice, { 40: () => two.relay.child.kill('SIGKILL') });
  const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
  const sent = await sendFiles(alice.client, { paths: [path.join(src, 'killed.bin')], to: [alice.client.findPeer('bob')] });
  assert.equal(sent.recipients[0]!.outcome, 'done', JSON.stringify(sent.recipients[0]));
  await received;
  assert.equal(await sha256File(path.join(out, 'killed.bin')), sum);
  assert.ok(chunks() < 121 + 2 * 16, `sent ${chunks()} chunks for 121: resumed, not restarted from zero`);
  // Carol never comes back: node one says she left once node two has been silent long enough.
  await h.until(() => !alice.client.peers.has(carol.identity.peerId), 5000);
  assert.ok(alice.client.peers.has(bob.identity.peerId), 'bob, back on node one, is still listed');
});

test('Redis restarts: the nodes report it in /readyz, reconnect, and transfers cross nodes again', async () => {
  const own = await startRedis();
  cleanups.push(() => own.stop());
  const { h, a, b } = await cluster({}, own.url);
  const alice = await h.peer('alice');
  const bob = await h.peer('bob', { url: b });
  await h.until(() => alice.client.peers.has(bob.identity.peerId));
  const src = await h.tempDir();
  const file = path.join(src, 'after.bin');
  const sum = await writeRandomFile(file, 5 * DEFAULT_CHUNK_SIZE, 'after');
  const ready = async (url: string) => (await fetch(`${url}/readyz`)).status;
  await own.stop();
  for (let i = 0; i < 100 && ((await ready(a)) === 200 || (await ready(b)) === 200); i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(await ready(a), 503, 'a node without Redis is not ready');
  assert.equal(await ready(b), 503, 'neither is the other');
  const again = await startRedis(Number(new URL(own.url).port));
  cleanups.unshift(() => again.stop()); // After the nodes.
  for (let i = 0; i < 200 && ((await ready(a)) !== 200 || (await ready(b)) !== 200); i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(await ready(a), 200);
  assert.equal(await ready(b), 200);
  const out = await h.tempDir();
  const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
  const sent = await sendFiles(alice.client, { paths: [file], to: [alice.client.findPeer('bob')], answerTimeoutMs: 10_000 });
  assert.equal(sent.recipients[0]!.outcome, 'done', JSON.stringify(sent.recipients[0]));
  await received;
  assert.equal(await sha256File(path.join(out, 'after.bin')), sum);
});

test('sft-relay --redis: a bad URL is a configuration error, an unreachable Redis a clear failure, and the password never printed', async () => {
  const bad = await run('sft-relay', ['--port', '0', '--redis', 'http://127.0.0.1:6379']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /redis: expected a URL such as redis:\/\//);
  // Nothing listens on port 1; the client gives up within its connect timeout or at the refusal.
  const down = await run('sft-relay', ['--port', '0', '--log-level', 'warn'], { SFT_RELAY_REDIS: 'redis://:hunter2@127.0.0.1:1' });
  assert.equal(down.code, 1);
  assert.match(down.stderr, /could not reach redis at redis:\/\/:redacted@127\.0\.0\.1:1/);
  assert.doesNotMatch(down.stdout + down.stderr, /hunter2/);
});

test("a recipient on another node that acknowledges what it never reads: its node stops the leg (SLOW_CONSUMER)", async () => {
  const { a, b } = await cluster({ window: 4 });
  const sender = Identity.generate();
  const colluder = Identity.generate();
  const s = await rawConnect(a);
  const r = await rawConnect(b);
  // The colluder's paused socket would hold a WebSocket close handshake for 30 s: destroy it.
  const tcp = () => (r.socket.io.engine.transport as unknown as { ws: { _socket: { pause(): void; destroy(): void } } }).ws._socket;
  cleanups.push(async () => {
    s.close();
    tcp().destroy();
    r.close();
  });
  assert.equal((await rawJoin(s, sender, 'sender')).ok, true);
  assert.equal((await rawJoin(r, colluder, 'colluder')).ok, true);
  await new Promise((resolve) => setTimeout(resolve, 100)); // The colluder's room is known to node A.
  const chunkSize = 1024 * 1024;
  const chunks = 200; // 200 MiB if node B kept it all.
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
  tcp().pause();
  let stopped: string | undefined;
  s.socket.on('cancel', (m: { code: string }) => (stopped = m.code));
  // Acknowledgements reach the sender through two nodes and Redis: it keeps to the window.
  let acked = 0;
  s.socket.on('ack', (m: { index: number }) => (acked = m.index + 1));
  const payload = Buffer.alloc(chunkSize + 16);
  for (let i = 0; i < chunks && !stopped; i++) {
    await waitFor(() => i < acked + 4 || stopped !== undefined, 5000);
    if (stopped) break;
    s.socket.emit('chunk', transferId, i, payload);
    await new Promise((resolve) => setTimeout(resolve, 5));
    r.socket.emit('ack', { transferId, index: i });
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  await waitFor(() => stopped !== undefined, 5000);
  assert.equal(stopped, 'SLOW_CONSUMER');
});
