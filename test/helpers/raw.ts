/**
 * A raw socket.io-client connection to the relay, for tests that play a hostile or broken client:
 * it speaks the wire protocol directly, without the client core's checks.
 */
import { io, type Socket } from 'socket.io-client';
import { PROTOCOL_VERSION, SOCKET_PATH, peerInfo, type ChallengeMessage, type ErrorMessage, type PeerInfo, type Result } from '../../extension/core/protocol';
import { originOf, proveJoin } from '../../extension/core/crypto/envelope';
import type { Identity } from '../../extension/core/crypto/identity';

export interface RawConnection {
  readonly socket: Socket;
  readonly url: string;
  readonly challenge: ChallengeMessage;
  /** Every relay.error received, in order. */
  readonly errors: ErrorMessage[];
  close(): void;
}

export function rawConnect(url: string, auth: Record<string, unknown> = { v: PROTOCOL_VERSION }): Promise<RawConnection> {
  const socket = io(url, { path: SOCKET_PATH, transports: ['websocket'], reconnection: false, auth, forceNew: true });
  const errors: ErrorMessage[] = [];
  socket.on('relay.error', (e: ErrorMessage) => errors.push(e));
  return new Promise((resolve, reject) => {
    socket.once('challenge', (challenge: ChallengeMessage) => resolve({ socket, url, challenge, errors, close: () => socket.disconnect() }));
    socket.once('connect_error', (error: Error & { data?: ErrorMessage }) => {
      socket.disconnect();
      reject(Object.assign(new Error(error.message), { code: error.data?.code }));
    });
  });
}

/** Joins honestly as `identity`, or with `claim` overriding what is claimed. */
export async function rawJoin(conn: RawConnection, identity: Identity, name: string, claim: Partial<PeerInfo & { origin: string }> = {}): Promise<Result<{ peers: PeerInfo[] }>> {
  const origin = claim.origin ?? originOf(conn.url);
  const proof = proveJoin(identity, Buffer.from(conn.challenge.nonce, 'base64url'), conn.challenge.relayId, origin);
  return conn.socket.timeout(5000).emitWithAck('hello', { ...peerInfo(identity, name), ...claim, origin, proof: proof.toString('base64url') });
}

export function waitFor(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (check()) return resolve();
      if (Date.now() > deadline) return reject(new Error('timed out waiting for a condition'));
      setTimeout(tick, 10);
    };
    tick();
  });
}
