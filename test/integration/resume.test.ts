/**
 * Dropped connections: a relay restarted mid-transfer, a receiver's network cut, and a peer that
 * does not come back within the grace period. Real relays, real clients that reconnect on their
 * own, real files; the network cut is a TCP proxy that drops every connection through it.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Harness, listTree, sha256File, writeRandomFile, type Peer } from '../helpers/harness';
import { createRelay } from '../../server/relay';
import { sendFiles } from '../../extension/core/transfer/sender';
import { startTapProxy } from '../../scripts/tap-proxy';
import { DEFAULT_CHUNK_SIZE } from '../../extension/core/crypto/stream';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** Counts the chunks a client sends, to show a resume does not start again from zero. */
function countChunks(peer: Peer): () => number {
  let sent = 0;
  const original = peer.client.sendChunk.bind(peer.client);
  peer.client.sendChunk = (id, index, data) => {
    sent += 1;
    original(id, index, data);
  };
  return () => sent;
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
  const sentChunks = countChunks(alice);
  const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
  let restarted: Promise<void> | undefined;
  const sent = await sendFiles(alice.client, {
    paths: [path.join(src, 'resumed.bin')],
    to: [alice.client.findPeer('bob')],
    onProgress: (p) => {
      if (!restarted && p.bytes > size / 3) {
        restarted = (async () => {
          await h.relay!.stop();
          h.relay = createRelay({ port });
          await h.relay.start();
        })();
      }
    },
  });
  assert.ok(restarted, 'the relay was restarted mid-transfer');
  assert.equal(sent.recipients[0]!.outcome, 'done', JSON.stringify(sent.recipients[0]));
  await received;
  assert.equal(await sha256File(path.join(out, 'resumed.bin')), sum);
  assert.deepEqual(await listTree(out), ['resumed.bin']);
  const chunkCount = 121;
  assert.ok(sentChunks() < chunkCount + 2 * 16, `sent ${sentChunks()} chunks for ${chunkCount}: resumed, not restarted from zero`);
});

test("the receiver's network drops mid-transfer: it reconnects and the transfer resumes", async () => {
  const h = await Harness.start();
  cleanups.push(() => h.close());
  const tap = await startTapProxy(h.url, () => undefined);
  cleanups.push(() => tap.close());
  const alice = await h.peer('alice', { reconnect: true });
  const bob = await h.peer('bob', { reconnect: true, url: tap.url });
  await h.until(() => alice.client.peers.has(bob.identity.peerId));
  const src = await h.tempDir();
  const out = await h.tempDir();
  const size = 100 * DEFAULT_CHUNK_SIZE;
  const sum = await writeRandomFile(path.join(src, 'cut.bin'), size, 'cut');
  const sentChunks = countChunks(alice);
  let cut = false;
  const received = bob.nextOffer().then((o) =>
    o.accept({
      directory: out,
      onProgress: (p) => {
        if (!cut && p.bytes > size / 2) {
          cut = true;
          tap.cut();
        }
      },
    }),
  );
  const sent = await sendFiles(alice.client, { paths: [path.join(src, 'cut.bin')], to: [alice.client.findPeer('bob')] });
  assert.ok(cut);
  assert.equal(sent.recipients[0]!.outcome, 'done', JSON.stringify(sent.recipients[0]));
  await received;
  assert.equal(await sha256File(path.join(out, 'cut.bin')), sum);
  assert.ok(sentChunks() < 100 + 2 * 16, `sent ${sentChunks()} chunks for 100`);
});

test('a peer that does not come back within the grace period: both sides see EXPIRED, nothing partial remains', async () => {
  const h = await Harness.start({ resumeGraceMs: 500 });
  cleanups.push(() => h.close());
  const alice = await h.peer('alice', { reconnect: true });
  const bob = await h.peer('bob', { reconnect: true });
  await h.until(() => alice.client.peers.has(bob.identity.peerId));
  const src = await h.tempDir();
  const out = await h.tempDir();
  await writeRandomFile(path.join(src, 'gone.bin'), 60 * DEFAULT_CHUNK_SIZE, 'gone');
  let gone = false;
  const received = bob.nextOffer().then((o) =>
    o.accept({
      directory: out,
      onProgress: (p) => {
        if (!gone && p.bytes > 10 * DEFAULT_CHUNK_SIZE) {
          gone = true;
          alice.client.close(); // The sender vanishes for good.
        }
      },
    }),
  );
  const sending = sendFiles(alice.client, { paths: [path.join(src, 'gone.bin')], to: [alice.client.findPeer('bob')] });
  await assert.rejects(received, { code: 'EXPIRED' });
  assert.deepEqual(await listTree(out), [], 'the partial file was removed');
  const sent = await sending;
  const leg = sent.recipients[0]!;
  assert.equal(leg.outcome === 'failed' && leg.code, 'EXPIRED');
});
