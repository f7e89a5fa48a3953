/**
 * A stand-in relay that speaks the wire protocol but does what a compromised relay could do:
 * rewrite offers and tamper with, drop, reorder, replay or withhold chunks. It exists for tests
 * only, because the real relay will not misbehave on purpose; the clients under test are real.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import crypto from 'node:crypto';
import { Server, type Socket } from 'socket.io';
import { PROTOCOL_VERSION, SOCKET_PATH, type OfferMessage, type PeerInfo } from '../../extension/core/protocol';

export type EmitChunk = (index: number, data: Buffer) => void;

export interface Tampering {
  /** Rewrites an offer before delivery; return an array to deliver it more than once. */
  offer?(offer: OfferMessage): OfferMessage | OfferMessage[];
  /** Rewrites a recipient's `done` (and its signed receipt) before the sender gets it. */
  done?(message: { transferId: string; receipt: string }): { transferId: string; receipt: string };
  /** Decides what the recipients get for chunk `index`; `emit` delivers a (possibly altered) chunk. */
  chunk?(transferId: string, index: number, data: Buffer, emit: EmitChunk): void;
}

export interface HostileRelay {
  readonly url: string;
  /** Every chunk senders sent, per transfer, untouched (for replays). */
  readonly seen: Map<string, Buffer[]>;
  tampering: Tampering;
  close(): Promise<void>;
}

export async function startHostileRelay(tampering: Tampering = {}): Promise<HostileRelay> {
  const server = http.createServer();
  const io = new Server(server, { path: SOCKET_PATH, transports: ['websocket'], maxHttpBufferSize: 4 * 1024 * 1024 });
  const peers = new Map<string, { socket: Socket; info: PeerInfo }>();
  const transfers = new Map<string, { from: string; to: string[] }>();
  const seen = new Map<string, Buffer[]>();
  const relay: HostileRelay = { url: '', seen, tampering, close: () => new Promise<void>((r) => io.close(() => r())) };
  const send = (peerId: string, event: string, ...args: unknown[]) => peers.get(peerId)?.socket.emit(event, ...args);
  const ok = (reply: unknown) => typeof reply === 'function' && (reply as (r: unknown) => void)({ ok: true });

  io.on('connection', (socket) => {
    let me: string | undefined;
    socket.emit('challenge', { v: PROTOCOL_VERSION, relayId: 'hostile', nonce: crypto.randomBytes(32).toString('base64url'), window: 16, maxChunkSize: 1024 * 1024, maxFileSize: null });
    socket.on('hello', (hello: PeerInfo & { proof: string }, reply: (r: unknown) => void) => {
      const { proof: _proof, ...info } = hello;
      me = info.peerId;
      reply({ ok: true, peers: [...peers.values()].map((p) => p.info) });
      for (const p of peers.values()) p.socket.emit('peer.joined', info);
      peers.set(info.peerId, { socket, info });
    });
    socket.on('offer', (offer: OfferMessage, reply: unknown) => {
      ok(reply);
      const to = offer.stanzas.map((s) => s.to);
      transfers.set(offer.transferId, { from: me!, to });
      const delivered = relay.tampering.offer?.(offer) ?? offer;
      for (const o of Array.isArray(delivered) ? delivered : [delivered]) for (const id of to) send(id, 'offer', o);
    });
    socket.on('answer', (m: { transferId: string }, reply: unknown) => {
      ok(reply);
      const t = transfers.get(m.transferId);
      if (t) send(t.from, 'answer', { ...m, from: me });
    });
    socket.on('chunk', (transferId: string, index: number, data: Buffer) => {
      const t = transfers.get(transferId);
      if (!t) return;
      seen.set(transferId, [...(seen.get(transferId) ?? []), data]);
      const emit: EmitChunk = (i, d) => t.to.forEach((id) => send(id, 'chunk', transferId, i, d));
      if (relay.tampering.chunk) relay.tampering.chunk(transferId, index, data, emit);
      else emit(index, data);
    });
    for (const event of ['ack', 'done', 'cancel'] as const) {
      socket.on(event, (m: { transferId: string }, reply: unknown) => {
        ok(reply);
        const t = transfers.get(m.transferId);
        if (!t) return;
        const message = event === 'done' && relay.tampering.done ? relay.tampering.done(m as { transferId: string; receipt: string }) : m;
        for (const id of me === t.from ? t.to : [t.from]) send(id, event, { ...message, from: me });
      });
    }
    socket.on('disconnect', () => {
      if (me && peers.get(me)?.socket === socket) peers.delete(me);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  (relay as { url: string }).url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return relay;
}
