/**
 * A cancel while a transfer waits to be resumed: one end (`away`) loses its connection mid-stream,
 * the other calls the transfer off, and the one away must hear CANCELLED when it is back. The
 * tests give the relay a grace period far longer than they may take, so only the relay's notice
 * can end the wait in time. Shared by the single-relay and the cluster tests.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { listTree, writeRandomFile, type Harness, type Peer } from './harness';
import type { TapProxy } from '../../scripts/tap-proxy';
import { sendFiles } from '../../extension/core/transfer/sender';
import { DEFAULT_CHUNK_SIZE } from '../../extension/core/crypto/stream';

/** Alice sends Bob a file; `tap` carries the connection of the one `away`, and goes down after 5 chunks. */
export async function cancelWhileAway(h: Harness, o: { alice: Peer; bob: Peer; tap: TapProxy; away: 'alice' | 'bob' }): Promise<void> {
  const { alice, bob, tap } = o;
  const src = await h.tempDir();
  const out = await h.tempDir();
  await writeRandomFile(path.join(src, 'away.bin'), 40 * DEFAULT_CHUNK_SIZE, 'away');
  let offers = 0;
  const offer = alice.client.offer.bind(alice.client);
  alice.client.offer = (message) => {
    offers += 1;
    return offer(message);
  };
  let written = 0;
  const ack = bob.client.ack.bind(bob.client);
  bob.client.ack = (id, index) => {
    ack(id, index);
    if (++written === 5) tap.setDown(true);
  };
  const stopSending = new AbortController();
  const stopReceiving = new AbortController();
  const received = bob.nextOffer().then((offered) => offered.accept({ directory: out, signal: stopReceiving.signal }));
  received.catch(() => undefined); // Asserted below.
  const sending = sendFiles(alice.client, { paths: [path.join(src, 'away.bin')], to: [alice.client.findPeer('bob')], signal: stopSending.signal });
  sending.catch(() => undefined);
  // The one who stayed sees the other leave, and gives up.
  const [stayed, gone] = o.away === 'bob' ? [alice, bob] : [bob, alice];
  await h.until(() => !stayed.client.peers.has(gone.identity.peerId), 10_000);
  (o.away === 'bob' ? stopSending : stopReceiving).abort();
  // The one away comes back and is told; both ends end CANCELLED.
  tap.setDown(false);
  const tooLate = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no cancel within 30 s: it would end only as EXPIRED')), 30_000).unref());
  const [leg] = (await Promise.race([sending, tooLate])).recipients;
  assert.equal(leg!.outcome === 'failed' && leg!.code, 'CANCELLED', JSON.stringify(leg));
  await Promise.race([assert.rejects(received, { code: 'CANCELLED' }), tooLate]);
  assert.deepEqual(await listTree(out), [], 'the partial file was removed');
  assert.equal(offers, 1, 'the transfer was not offered again after the cancel');
}
