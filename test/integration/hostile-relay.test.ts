/**
 * A hostile relay. This is a stand-in relay written for the test (a real Socket.IO server on port
 * 0 speaking the wire protocol), because the real relay will not misbehave on purpose.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import crypto from 'node:crypto';
import { Server } from 'socket.io';
import { RelayClient } from '../../extension/core/client';
import { Identity } from '../../extension/core/crypto/identity';
import { PROTOCOL_VERSION, SOCKET_PATH, peerInfo, type PeerInfo } from '../../extension/core/protocol';
import type { SftError } from '../../extension/core/errors';

async function hostileRelay(listing: PeerInfo[], joinedLater: PeerInfo[]) {
  const server = http.createServer();
  const io = new Server(server, { path: SOCKET_PATH, transports: ['websocket'] });
  io.on('connection', (socket) => {
    socket.emit('challenge', { v: PROTOCOL_VERSION, relayId: 'evil', nonce: crypto.randomBytes(32).toString('base64url'), window: 4, maxChunkSize: 65536, maxFileSize: null });
    socket.on('hello', (_hello: unknown, reply: (r: unknown) => void) => {
      reply({ ok: true, peers: listing });
      for (const peer of joinedLater) socket.emit('peer.joined', peer);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise<void>((r) => io.close(() => r())) };
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
