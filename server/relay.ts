/**
 * The relay: authenticates peers, shows who is online, and routes offers, answers and encrypted
 * chunks between them under the team's limits. It never holds a key and never sees a name or a
 * byte of content: only peer ids, display names, timing and ciphertext lengths (from which the
 * total plaintext size follows exactly; padding to hide it is a possible later change).
 *
 * `createRelay(options)` returns a relay that can be started and stopped; the `sft-relay` binary
 * and the VS Code extension both embed it. Only `start()` listens.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import crypto from 'node:crypto';
import { Server, type Socket } from 'socket.io';
import pino from 'pino';
import {
  AckSchema,
  AnswerSchema,
  CancelSchema,
  HandshakeSchema,
  HelloSchema,
  MAX_MESSAGE_BYTES,
  OfferSchema,
  PROTOCOL_VERSION,
  SOCKET_PATH,
  DoneSchema,
  errorMessage,
  isChunk,
  parse,
  peerIdentity,
  type ClientToRelayEvents,
  type ErrorMessage,
  type PeerInfo,
  type RelayToClientEvents,
  type Reply,
} from '../extension/core/protocol';
import { SftError, toSftError, type ErrorCode } from '../extension/core/errors';
import { checkJoinProof, originOf } from '../extension/core/crypto/envelope';
import { MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, layoutFromCipher, plainChunkLength, type PayloadLayout } from '../extension/core/crypto/stream';
import { TAG_BYTES } from '../extension/core/crypto/primitives';
import { KeyedRateLimiter, TokenBucket } from './rate-limit';
import { fileAudit, nullAudit, type AuditSink } from './audit';
import { createRelayMetrics } from './metrics';

/** A team token, optionally naming the team whose members it admits (default "default"). */
export type TeamToken = string | { readonly token: string; readonly team: string };

export interface RelayOptions {
  host?: string;
  port?: number;
  /**
   * The URLs clients use to reach this relay (behind a proxy, the proxy's). Join proofs are bound
   * to the origin the client dialed; with this set, only these origins are accepted, which stops a
   * rogue relay from relaying this relay's challenges. Without it, the Host header is compared.
   */
  publicUrls?: readonly string[];
  /** Team tokens; a client must present one of them. Empty or absent: anyone may join. */
  tokens?: readonly TeamToken[];
  /** Peer ids allowed to join; absent or null: any peer with a valid token. */
  allowList?: ReadonlySet<string> | null;
  /** Serve https:// and wss:// with this PEM certificate chain and key. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Transfers running at once on this relay. */
  maxTransfers?: number | null;
  /** Ciphertext bytes a client may offer per hour (a sliding budget). */
  maxBytesPerClientPerHour?: number | null;
  /** Who may send to whom: anyone, or only peers admitted with the same team's token. */
  recipients?: 'anyone' | 'same-team';
  /** Include Node's process metrics (event-loop lag, memory, GC) in /metrics (default true). */
  processMetrics?: boolean;
  /** Serve /metrics on its own port (e.g. an internal interface) instead of the main one. */
  metricsPort?: number;
  metricsHost?: string;
  /**
   * Behind a reverse proxy: take the client's address from the last X-Forwarded-For entry (the one
   * the proxy added), for per-address limits and the audit log. Only set it when a proxy is in front.
   */
  trustProxy?: boolean;
  /** Rotate the audit log file at this size, keeping this many old files. */
  auditMaxBytes?: number;
  auditKeep?: number;
  /** Largest plaintext payload per transfer, in bytes (derived exactly from ciphertext sizes). */
  maxFileSize?: number | null;
  /** Transfers a client may be sending at once. */
  maxTransfersPerClient?: number;
  /** Chunks in flight per transfer beyond the slowest recipient's acknowledgement. */
  window?: number;
  maxChunkSize?: number;
  /** Control messages (hello, offer, answer, cancel, done) per client per second, and burst. */
  controlRate?: { perSecond: number; burst: number };
  /** Connection attempts per remote address per second, and burst. */
  joinRate?: { perSecond: number; burst: number };
  /** Time a new connection has to prove its identity. */
  helloTimeoutMs?: number;
  /** How long after a dropped connection the sender may offer the same transfer again to resume it. */
  resumeGraceMs?: number;
  auditLog?: string | AuditSink;
  logger?: pino.Logger;
  relayId?: string;
}

type RelaySocket = Socket<ClientToRelayEvents, RelayToClientEvents, Record<string, never>, SocketData>;

interface SocketData {
  nonce: string;
  team: string;
  peer?: PeerInfo;
  replaced?: boolean;
}

type RecipientState = 'offered' | 'accepted' | 'declined' | 'done' | 'failed';

interface TransferState {
  readonly id: string;
  readonly from: string;
  readonly layout: PayloadLayout;
  readonly recipients: Map<string, { state: RecipientState; acked: number; receipt?: string }>;
  readonly startedAt: number;
  /** Whether chunks have started to flow (the first chunk sets where they start, on a resume). */
  streaming: boolean;
  /** Offered again after a drop: only then may recipients answer with a resume point. */
  readonly resumed: boolean;
  nextIndex: number;
  cipherBytes: number;
}

const roomOf = (peerId: string) => `peer:${peerId}`;
const JOINED = 'joined';
/** Refused messages after which a client is disconnected. */
const MAX_VIOLATIONS = 50;
const RECENTLY_ENDED = 10_000;

export interface Relay {
  /** Listens and resolves with the URL clients should use. */
  start(): Promise<string>;
  /**
   * Stops: refuses new connections and offers, tells clients why, lets running transfers finish
   * for up to `graceMs` (default 0), then closes every connection and the audit log.
   */
  stop(options?: { graceMs?: number }): Promise<void>;
  /** Replaces the tokens and allow-list; connected peers stay unless the allow-list drops them. */
  reload(update: { tokens?: readonly TeamToken[]; allowList?: ReadonlySet<string> | null }): Promise<void>;
  /** The URL of the separate metrics listener, when there is one. */
  readonly metricsUrl: string | undefined;
  readonly url: string | undefined;
  readonly relayId: string;
  /** Live counts, for health checks and tests. */
  stats(): { peers: number; transfers: number; connections: number };
}

export function createRelay(options: RelayOptions = {}): Relay {
  const log = options.logger ?? pino({ level: 'silent' });
  const relayId = options.relayId ?? `sft-relay-${crypto.randomBytes(6).toString('hex')}`;
  let tokens = hashTokens(options.tokens ?? []);
  const publicOrigins = new Set((options.publicUrls ?? []).map(originOf));
  let allowList = options.allowList ?? null;
  let shuttingDown = false;
  const windowSize = options.window ?? 16;
  const maxChunkSize = options.maxChunkSize ?? MAX_CHUNK_SIZE;
  // What the relay announces must pass the clients' own checks of the challenge.
  if (!Number.isInteger(windowSize) || windowSize < 1 || windowSize > 1024) throw new RangeError('window must be between 1 and 1024 chunks.');
  if (!Number.isInteger(maxChunkSize) || maxChunkSize < MIN_CHUNK_SIZE || maxChunkSize > MAX_CHUNK_SIZE) {
    throw new RangeError(`maxChunkSize must be between ${MIN_CHUNK_SIZE} and ${MAX_CHUNK_SIZE} bytes.`);
  }
  const maxTransfersPerClient = options.maxTransfersPerClient ?? 8;
  const maxFileSize = options.maxFileSize ?? null;
  const controlRate = options.controlRate ?? { perSecond: 20, burst: 60 };
  const joinLimiter = new KeyedRateLimiter(options.joinRate?.perSecond ?? 5, options.joinRate?.burst ?? 30);
  const audit: AuditSink =
    typeof options.auditLog === 'string' ? fileAudit(options.auditLog, {
          maxBytes: options.auditMaxBytes,
          keep: options.auditKeep,
          // The trail fails open: a full disk stops the audit, not the relay, and says so loudly.
          onError: (error) => log.error({ err: error }, 'the audit log could not be written; audit lines are being dropped'),
        }) : (options.auditLog ?? nullAudit);
  const hourly = options.maxBytesPerClientPerHour ?? null;
  const byteBudgets = hourly === null ? undefined : new KeyedRateLimiter(hourly / 3600, hourly);
  const transfers = new Map<string, TransferState>();
  /**
   * Recently ended transfers: their late chunks and acks are dropped quietly, not held against
   * anyone, and those cut off by a dropped connection may be offered again, by the same sender,
   * within the grace period.
   */
  const ended = new Map<string, { from: string; at: number; resumable: boolean; done: Array<{ to: string; receipt: string }>; chunkCount: number }>();
  const resumeGraceMs = options.resumeGraceMs ?? 60_000;
  if (!Number.isSafeInteger(resumeGraceMs) || resumeGraceMs < 0) throw new RangeError('resumeGraceMs must be a whole number of milliseconds.');
  /** Transfers being ended by a dropped connection: these may be resumed. */
  const interrupted = new Set<string>();

  const metrics = createRelayMetrics(() => ({ connections: io.engine.clientsCount, peers: io.sockets.adapter.rooms.get(JOINED)?.size ?? 0, transfers: transfers.size }), options.processMetrics ?? true);
  const serveMetrics = async (res: http.ServerResponse) => {
    res.writeHead(200, { 'content-type': metrics.registry.contentType });
    res.end(await metrics.registry.metrics());
  };

  const routes = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const json = (status: number, body: object) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method !== 'GET') return json(405, { error: 'method not allowed' });
    // Liveness: the process answers. Readiness: it takes new clients (not while draining).
    if (req.url === '/healthz') return json(200, { ok: true, relayId, protocol: PROTOCOL_VERSION });
    if (req.url === '/readyz') return shuttingDown ? json(503, { ready: false, reason: 'shutting down' }) : json(200, { ready: true });
    if (req.url === '/metrics' && options.metricsPort === undefined) return void serveMetrics(res);
    json(404, { error: 'not found' });
  };
  const httpServer = options.tls ? https.createServer({ cert: options.tls.cert, key: options.tls.key }, routes) : http.createServer(routes);
  const metricsServer =
    options.metricsPort === undefined
      ? undefined
      : http.createServer((req, res) => {
          if (req.method === 'GET' && req.url === '/metrics') return void serveMetrics(res);
          res.writeHead(404).end();
        });

  const io = new Server<ClientToRelayEvents, RelayToClientEvents, Record<string, never>, SocketData>(httpServer, {
    path: SOCKET_PATH,
    transports: ['websocket'], // No long-polling: no sticky sessions, no per-request buffering.
    allowUpgrades: false,
    serveClient: false,
    maxHttpBufferSize: MAX_MESSAGE_BYTES,
    perMessageDeflate: false, // Ciphertext does not compress; deflate would only cost CPU.
    connectTimeout: options.helloTimeoutMs ?? 10_000,
  });

  const clientAddress = (socket: { handshake: { address: string; headers: http.IncomingHttpHeaders } }): string => {
    const forwarded = socket.handshake.headers['x-forwarded-for'];
    const last = typeof forwarded === 'string' ? forwarded.split(',').pop()?.trim() : undefined;
    return options.trustProxy && last ? last : socket.handshake.address;
  };

  const sendError = (socket: RelaySocket, error: ErrorMessage) => socket.emit('relay.error', error);

  // ---- Admission: protocol version, team token, connection rate. ----
  io.use((socket, next) => {
    const address = clientAddress(socket);
    const refuse = (code: ErrorCode, message: string) => {
      audit.write({ event: 'refused', code, address });
      metrics.refused(code);
      log.info({ code, address }, 'connection refused');
      const error = new Error(message) as Error & { data: ErrorMessage };
      error.data = errorMessage(code, message);
      next(error);
    };
    if (shuttingDown) return refuse('SHUTTING_DOWN', 'The relay is shutting down.');
    if (!joinLimiter.take(address)) return refuse('JOIN_RATE_LIMITED', 'Too many connection attempts from this address; try again shortly.');
    const auth = HandshakeSchema.safeParse(socket.handshake.auth);
    if (auth.success && auth.data.v !== PROTOCOL_VERSION) {
      return refuse('PROTOCOL_VERSION', `This relay speaks protocol version ${PROTOCOL_VERSION}; update the client.`);
    }
    if (!auth.success) return refuse('BAD_MESSAGE', 'Malformed connection request.');
    if (tokens.length > 0) {
      // Compare hashes in constant time so the comparison leaks neither the token nor its length.
      const presented = crypto.createHash('sha256').update(auth.data.token ?? '').digest();
      const match = tokens.find((t) => crypto.timingSafeEqual(t.hash, presented));
      if (!match) return refuse('UNAUTHORIZED', 'This relay needs a valid team token.');
      socket.data.team = match.team;
    } else {
      socket.data.team = DEFAULT_TEAM;
    }
    next();
  });

  io.on('connection', (socket: RelaySocket) => {
    const nonce = crypto.randomBytes(32).toString('base64url');
    socket.data.nonce = nonce;
    const control = new TokenBucket(controlRate.perSecond, controlRate.burst);
    let violations = 0;
    let joining = false; // Set at the first hello, so a second one cannot join this socket twice.
    const helloTimer = setTimeout(() => {
      if (!socket.data.peer) socket.disconnect(true);
    }, options.helloTimeoutMs ?? 10_000);

    /** Records a client's misbehaviour; a client that keeps misbehaving is disconnected. */
    const violation = (error: SftError, transferId?: string) => {
      violations += 1;
      log.debug({ peer: socket.data.peer?.peerId, code: error.code, detail: error.detail }, 'refused message');
      metrics.refused(error.code);
      sendError(socket, errorMessage(error.code, error.message, transferId));
      if (violations >= MAX_VIOLATIONS) socket.disconnect(true);
    };

    const guard = <A extends unknown[]>(event: string, isControl: boolean, handler: (...args: A) => void | Promise<void>) =>
      (...args: A) => {
        const reply = typeof args[args.length - 1] === 'function' ? (args[args.length - 1] as Reply) : undefined;
        const fail = (error: SftError) => {
          if (!reply) return violation(error, transferOf(args));
          metrics.refused(error.code);
          reply({ ok: false, error: errorMessage(error.code, error.message) });
        };
        try {
          if (isControl && !control.take()) throw new SftError('RATE_LIMITED', 'Too many messages; slow down.');
          if (event !== 'hello' && !socket.data.peer) throw new SftError('NOT_JOINED', 'Join the relay before sending messages.');
          const result = handler(...args);
          if (result) result.catch((error: unknown) => fail(clientSafe(error)));
          // Synchronous handlers are done here; acknowledging lets a client know its answer,
          // done or cancel was handled before it disconnects (Socket.IO drops events that are
          // still queued when a connection closes).
          else reply?.({ ok: true });
        } catch (error) {
          fail(clientSafe(error));
        }
      };

    const clientSafe = (error: unknown): SftError => {
      const e = toSftError(error);
      if (e.code === 'INTERNAL') log.error({ err: error }, 'internal error while handling a message');
      return e.code === 'INTERNAL' ? new SftError('INTERNAL', 'The relay could not handle that message.') : e;
    };

    /** The transfer a message was about, so the client can route the refusal to it. */
    const transferOf = (args: unknown[]): string | undefined => {
      const first = args[0] as { transferId?: unknown } | string | undefined;
      const id = typeof first === 'string' ? first : first?.transferId;
      return typeof id === 'string' && /^[A-Za-z0-9_-]{22}$/.test(id) ? id : undefined;
    };

    socket.onAny((event: string) => {
      if (!KNOWN_EVENTS.has(event)) violation(new SftError('BAD_MESSAGE', 'Unknown message type.'));
    });

    socket.on(
      'hello',
      guard('hello', true, async (raw: unknown, reply: Reply<{ peers: PeerInfo[] }>) => {
        if (typeof reply !== 'function') throw new SftError('BAD_MESSAGE', 'hello needs an acknowledgement callback.');
        if (socket.data.peer || joining) throw new SftError('BAD_MESSAGE', 'Already joined.');
        joining = true;
        const hello = parse(HelloSchema, raw, 'hello');
        const { proof, origin, ...peer } = hello;
        // The origin the client signed must be this relay: one of its configured public URLs, or
        // (without any) the Host the connection arrived for.
        const here = publicOrigins.size > 0 ? publicOrigins.has(origin.toLowerCase()) : origin.toLowerCase() === String(socket.handshake.headers.host ?? '').toLowerCase();
        if (!here || !checkJoinProof(peerIdentity(peer), Buffer.from(nonce, 'base64url'), relayId, origin, Buffer.from(proof, 'base64url'))) {
          audit.write({ event: 'refused', code: 'BAD_PROOF', address: clientAddress(socket), peer: peer.peerId });
          reply({ ok: false, error: errorMessage('BAD_PROOF', 'The relay could not verify that you hold the key for this peer id.') });
          socket.disconnect(true);
          return;
        }
        if (allowList && !allowList.has(peer.peerId)) {
          audit.write({ event: 'refused', code: 'NOT_ALLOWED', address: clientAddress(socket), peer: peer.peerId });
          metrics.refused('NOT_ALLOWED');
          reply({ ok: false, error: errorMessage('NOT_ALLOWED', 'This peer id is not on the relay\'s allow-list; send it to the relay\'s operator.') });
          socket.disconnect(true);
          return;
        }
        clearTimeout(helloTimer);
        // One connection per identity: a reconnecting client replaces its stale connection.
        for (const old of await io.in(roomOf(peer.peerId)).fetchSockets()) {
          old.data.replaced = true;
          old.emit('relay.error', errorMessage('REPLACED', 'This identity connected again from elsewhere.'));
          old.disconnect(true);
        }
        if (!socket.connected) return;
        socket.data.peer = peer;
        // Join the room first, then announce, then list: of two peers joining at once, each
        // either finds the other in its list or hears the other's announcement (or both).
        socket.join([roomOf(peer.peerId), JOINED]);
        socket.to(JOINED).emit('peer.joined', peer);
        const peers = (await io.in(JOINED).fetchSockets()).flatMap((s) => (s.data.peer && s.data.peer.peerId !== peer.peerId ? [s.data.peer] : []));
        audit.write({ event: 'join', peer: peer.peerId, address: clientAddress(socket) });
        log.info({ peer: peer.peerId }, 'peer joined');
        reply({ ok: true, peers });
      }),
    );

    socket.on(
      'offer',
      guard('offer', true, async (raw: unknown, reply: Reply) => {
        if (typeof reply !== 'function') throw new SftError('BAD_MESSAGE', 'offer needs an acknowledgement callback.');
        if (shuttingDown) throw new SftError('SHUTTING_DOWN', 'The relay is shutting down and takes no new transfers.');
        const offer = parse(OfferSchema, raw, 'offer');
        const me = socket.data.peer!;
        if (offer.sender.peerId !== me.peerId || offer.sender.signPublicKey !== me.signPublicKey || offer.sender.agreePublicKey !== me.agreePublicKey) {
          throw new SftError('NOT_PARTICIPANT', 'An offer must come from the identity that joined.');
        }
        if (transfers.has(offer.transferId)) throw new SftError('DUPLICATE_TRANSFER', 'That transfer id is already in use.');
        const previous = ended.get(offer.transferId);
        if (previous && offer.resume && previous.from === me.peerId && previous.done.length === offer.stanzas.length) {
          // Delivered, but the sender's connection dropped before it heard so: tell it now.
          reply({ ok: true });
          for (const { to, receipt } of previous.done) {
            socket.emit('answer', { transferId: offer.transferId, accept: true, resumeFrom: previous.chunkCount, from: to });
            socket.emit('done', { transferId: offer.transferId, receipt, from: to });
          }
          return;
        }
        if (previous && (!offer.resume || previous.from !== me.peerId || !previous.resumable)) {
          throw new SftError('DUPLICATE_TRANSFER', 'That transfer id is already in use.');
        }
        if (previous && Date.now() - previous.at > resumeGraceMs) {
          throw new SftError('EXPIRED', `The transfer was interrupted more than ${Math.round(resumeGraceMs / 1000)} s ago and can no longer be resumed.`);
        }
        const to = offer.stanzas.map((s) => s.to);
        if (new Set(to).size !== to.length || to.includes(me.peerId)) throw new SftError('BAD_MESSAGE', 'Recipients must be distinct peers other than the sender.');
        if (offer.chunkSize > maxChunkSize) throw new SftError('MESSAGE_TOO_LARGE', `Chunks may be at most ${maxChunkSize} bytes on this relay.`);
        const layout = layoutFromCipher(offer.cipherBytes, offer.chunkSize, offer.chunkCount);
        if (!layout) throw new SftError('SIZE_MISMATCH', 'The declared sizes are inconsistent.');
        if (maxFileSize !== null && layout.plainBytes > maxFileSize) {
          throw new SftError('FILE_TOO_LARGE', `This relay accepts transfers of at most ${maxFileSize} bytes.`);
        }
        checkTransferLimits(me.peerId);
        const rooms = to.map(roomOf);
        const online = new Map((await io.in(rooms).fetchSockets()).flatMap((s) => (s.data.peer ? [[s.data.peer.peerId, s.data.team] as const] : [])));
        const offline = to.filter((id) => !online.has(id));
        if (offline.length > 0) throw new SftError('PEER_OFFLINE', `${offline.length} recipient(s) are not online.`);
        if (options.recipients === 'same-team' && to.some((id) => online.get(id) !== socket.data.team)) {
          throw new SftError('RECIPIENT_NOT_ALLOWED', 'This relay only allows transfers within your team.');
        }
        if (transfers.has(offer.transferId)) throw new SftError('DUPLICATE_TRANSFER', 'That transfer id is already in use.');
        // Checked again after the await above: offers sent at once must not all slip under the limits.
        checkTransferLimits(me.peerId);
        // Charged when offered, against the full ciphertext: a declined offer still used the budget,
        // which keeps offers from being a free way to probe it.
        if (byteBudgets && !previous && !byteBudgets.take(me.peerId, offer.cipherBytes)) {
          throw new SftError('QUOTA_EXCEEDED', `This relay allows ${hourly} bytes per client per hour; that budget is used up for now.`);
        }
        transfers.set(offer.transferId, {
          id: offer.transferId,
          from: me.peerId,
          layout,
          recipients: new Map(to.map((id) => [id, { state: 'offered', acked: 0 }])),
          startedAt: Date.now(),
          streaming: false,
          resumed: offer.resume !== undefined,
          nextIndex: 0,
          cipherBytes: 0,
        });
        audit.write({ event: 'offer', transfer: offer.transferId, from: me.peerId, to, cipherBytes: offer.cipherBytes, chunks: offer.chunkCount });
        metrics.offer();
        io.to(rooms).emit('offer', offer);
        reply({ ok: true });
      }),
    );

    socket.on(
      'answer',
      guard('answer', true, (raw: unknown) => {
        const answer = parse(AnswerSchema, raw, 'answer');
        const { transfer, recipient } = asRecipient(answer.transferId);
        if (recipient.state !== 'offered') throw new SftError('BAD_MESSAGE', 'This offer was already answered.');
        if (answer.resumeFrom !== undefined && (!transfer.resumed || !answer.accept || answer.resumeFrom > transfer.layout.chunkCount)) {
          throw new SftError('BAD_MESSAGE', 'A resume point must lie within the transfer.');
        }
        recipient.state = answer.accept ? 'accepted' : 'declined';
        recipient.acked = answer.resumeFrom ?? 0;
        if (!answer.accept) metrics.leg('declined');
        audit.write({ event: answer.accept ? 'accept' : 'decline', transfer: transfer.id, from: transfer.from, to: me() });
        io.to(roomOf(transfer.from)).emit('answer', { ...answer, from: me() });
        settle(transfer);
      }),
    );

    socket.on(
      'chunk',
      guard('chunk', false, (transferId: unknown, index: unknown, data: unknown) => {
        if (!isChunk(transferId, index, data)) throw new SftError('BAD_MESSAGE', 'Malformed chunk.');
        const transfer = transfers.get(transferId as string);
        if (!transfer && ended.has(transferId as string)) return; // Was in flight when the transfer ended.
        if (!transfer) throw new SftError('UNKNOWN_TRANSFER', 'No such transfer.');
        if (transfer.from !== me()) throw new SftError('NOT_PARTICIPANT', 'Only the sender may send chunks.');
        let receiving = [...transfer.recipients].filter(([, r]) => r.state === 'accepted');
        if (!transfer.streaming) {
          // Legs cannot return to 'offered', so this is checked once, at the first chunk.
          if ([...transfer.recipients.values()].some((r) => r.state === 'offered') || receiving.length === 0) {
            return abort(transfer, me(), new SftError('NOT_ACCEPTED', 'Chunks arrived before the recipients accepted.'));
          }
          // On a resume the stream starts where the slowest recipient's verified chunks end.
          transfer.streaming = true;
          transfer.nextIndex = Math.min(...receiving.map(([, r]) => r.acked));
        }
        if (receiving.length === 0) return; // Every leg ended; a late chunk, dropped quietly.
        if (index !== transfer.nextIndex) return abort(transfer, me(), new SftError('OUT_OF_ORDER', `Expected chunk ${transfer.nextIndex}, got ${index}.`));
        if (index >= transfer.layout.chunkCount || data.length !== plainChunkLength(transfer.layout, index) + TAG_BYTES) {
          return abort(transfer, me(), new SftError('SIZE_MISMATCH', 'A chunk does not match the declared sizes.'));
        }
        const slowest = Math.min(...receiving.map(([, r]) => r.acked));
        if (index >= slowest + windowSize) return abort(transfer, me(), new SftError('WINDOW_EXCEEDED', 'The sender ran ahead of its receivers.'));
        // Acknowledgements bound what a sender may send; this bounds what the relay holds for a
        // recipient that acknowledges data it does not read (a pair of colluding clients).
        const perTransfer = windowSize * 2 * (maxChunkSize + TAG_BYTES);
        for (const [id] of receiving) {
          const backlog = backlogOf(id);
          // The scan over transfers runs only when one transfer's allowance is already exceeded.
          if (backlog > perTransfer && backlog > perTransfer * transfersTo(id)) {
            abort(transfer, id, new SftError('SLOW_CONSUMER', 'A recipient is not reading the data it acknowledges; its transfer was stopped.'));
          }
        }
        receiving = receiving.filter(([, r]) => r.state === 'accepted');
        if (receiving.length === 0) return;
        transfer.nextIndex += 1;
        transfer.cipherBytes += data.length;
        io.to(receiving.map(([id]) => roomOf(id))).emit('chunk', transfer.id, index as number, data);
        metrics.relayed(data.length * receiving.length);
      }),
    );

    socket.on(
      'ack',
      guard('ack', false, (raw: unknown) => {
        const ack = parse(AckSchema, raw, 'ack');
        if (!transfers.has(ack.transferId) && ended.has(ack.transferId)) return;
        const { transfer, recipient } = asRecipient(ack.transferId);
        // Strictly increasing: a repeated acknowledgement carries no news and is not forwarded.
        if (recipient.state !== 'accepted' || ack.index >= transfer.nextIndex || ack.index + 1 <= recipient.acked) {
          throw new SftError('BAD_MESSAGE', 'That acknowledgement does not match what was sent.');
        }
        recipient.acked = ack.index + 1;
        io.to(roomOf(transfer.from)).emit('ack', { ...ack, from: me() });
      }),
    );

    socket.on(
      'done',
      guard('done', true, (raw: unknown) => {
        const ref = parse(DoneSchema, raw, 'done');
        const { transfer, recipient } = asRecipient(ref.transferId);
        if (recipient.state !== 'accepted' || recipient.acked !== transfer.layout.chunkCount) {
          throw new SftError('BAD_MESSAGE', 'A transfer is done only after its last chunk.');
        }
        recipient.state = 'done';
        recipient.receipt = ref.receipt;
        metrics.leg('complete');
        audit.write({ event: 'complete', transfer: transfer.id, from: transfer.from, to: me(), cipherBytes: transfer.cipherBytes, durationMs: Date.now() - transfer.startedAt });
        io.to(roomOf(transfer.from)).emit('done', { ...ref, from: me() });
        settle(transfer);
      }),
    );

    socket.on(
      'cancel',
      guard('cancel', true, (raw: unknown) => {
        const cancel = parse(CancelSchema, raw, 'cancel');
        const transfer = transfers.get(cancel.transferId);
        if (!transfer) throw new SftError('UNKNOWN_TRANSFER', 'No such transfer.');
        if (transfer.from !== me() && !transfer.recipients.has(me())) throw new SftError('NOT_PARTICIPANT', 'Not your transfer.');
        abort(transfer, me(), new SftError(cancel.code, cancel.message ?? 'Cancelled.'), 'cancel');
      }),
    );

    socket.on('disconnect', (reason) => {
      clearTimeout(helloTimer);
      const peer = socket.data.peer;
      if (!peer) return;
      for (const transfer of [...transfers.values()]) {
        if (transfer.from === peer.peerId || transfer.recipients.has(peer.peerId)) {
          if (transfer.recipients.size === 1) interrupted.add(transfer.id);
          abort(transfer, peer.peerId, new SftError('PEER_GONE', 'A participant disconnected.'));
          interrupted.delete(transfer.id);
        }
      }
      audit.write({ event: 'leave', peer: peer.peerId });
      log.info({ peer: peer.peerId, reason }, 'peer left');
      if (!socket.data.replaced) io.to(JOINED).emit('peer.left', { peerId: peer.peerId });
    });

    const me = () => socket.data.peer!.peerId;

    socket.emit('challenge', {
      v: PROTOCOL_VERSION,
      relayId,
      nonce,
      window: windowSize,
      maxChunkSize,
      maxFileSize,
      resumeGraceMs,
    });

    function asRecipient(transferId: string) {
      const transfer = transfers.get(transferId);
      if (!transfer) throw new SftError('UNKNOWN_TRANSFER', 'No such transfer.');
      const recipient = transfer.recipients.get(me());
      if (!recipient) throw new SftError('NOT_PARTICIPANT', 'Not your transfer.');
      return { transfer, recipient };
    }
  });

  /**
   * Ends a transfer's live legs with `error`. When the sender (or a relay-side check on the
   * sender's stream) ends it, every live recipient is told; when a recipient does, only that leg
   * ends and the sender is told.
   */
  function abort(transfer: TransferState, by: string, error: SftError, kind: 'cancel' | 'fail' = 'fail'): void {
    const message = { transferId: transfer.id, code: error.code, message: error.message, from: by };
    const live = [...transfer.recipients].filter(([, r]) => r.state === 'offered' || r.state === 'accepted');
    const legs = by === transfer.from ? live : live.filter(([id]) => id === by);
    for (const [id, recipient] of legs) {
      recipient.state = 'failed';
      metrics.leg(kind === 'cancel' ? 'cancelled' : 'failed');
      audit.write({ event: kind, transfer: transfer.id, from: transfer.from, to: id, by, code: error.code, cipherBytes: transfer.cipherBytes, durationMs: Date.now() - transfer.startedAt });
    }
    if (legs.length === 0) return settle(transfer);
    const notify = [...legs.map(([id]) => id), transfer.from].filter((id) => id !== by || kind === 'fail');
    if (notify.length > 0) io.to(notify.map(roomOf)).emit('cancel', message);
    settle(transfer);
  }

  /** Forgets a transfer once no leg is live; the sender learns the outcome of each leg as it ends. */
  /**
   * Bytes this node holds, unsent, for a peer's connections: Engine.IO's packet queue (which grows
   * while a write is pending) plus the WebSocket's own send buffer.
   */
  function backlogOf(peerId: string): number {
    let bytes = 0;
    for (const id of io.sockets.adapter.rooms.get(roomOf(peerId)) ?? []) {
      const conn = io.sockets.sockets.get(id)?.conn as unknown as
        | { writeBuffer?: Array<{ data?: unknown }>; transport?: { socket?: { bufferedAmount?: number } } }
        | undefined;
      for (const packet of conn?.writeBuffer ?? []) bytes += Buffer.isBuffer(packet.data) || typeof packet.data === 'string' ? packet.data.length : 0;
      bytes += conn?.transport?.socket?.bufferedAmount ?? 0;
    }
    return bytes;
  }

  function transfersTo(peerId: string): number {
    let n = 0;
    for (const t of transfers.values()) if (t.recipients.get(peerId)?.state === 'accepted') n += 1;
    return Math.max(1, n);
  }

  function checkTransferLimits(peerId: string): void {
    let mine = 0;
    for (const t of transfers.values()) if (t.from === peerId) mine += 1;
    if (mine >= maxTransfersPerClient) throw new SftError('TOO_MANY_TRANSFERS', `At most ${maxTransfersPerClient} transfers may run at once per client.`);
    if (options.maxTransfers != null && transfers.size >= options.maxTransfers) throw new SftError('RELAY_BUSY', 'The relay is at its limit of running transfers; try again shortly.');
  }

  function settle(transfer: TransferState): void {
    const live = [...transfer.recipients.values()].some((r) => r.state === 'offered' || r.state === 'accepted');
    if (live) return;
    transfers.delete(transfer.id);
    ended.delete(transfer.id); // Re-inserted last, so the map stays in order of ending.
    const done = [...transfer.recipients].flatMap(([to, r]) => (r.state === 'done' && r.receipt ? [{ to, receipt: r.receipt }] : []));
    ended.set(transfer.id, { from: transfer.from, at: Date.now(), resumable: interrupted.has(transfer.id), done, chunkCount: transfer.layout.chunkCount });
    interrupted.delete(transfer.id);
    if (ended.size > RECENTLY_ENDED) ended.delete(ended.keys().next().value!);
  }

  let url: string | undefined;
  let metricsUrl: string | undefined;
  return {
    relayId,
    get url() {
      return url;
    },
    get metricsUrl() {
      return metricsUrl;
    },
    async start() {
      await new Promise<void>((resolve, reject) => {
        httpServer.once('error', reject);
        httpServer.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
          httpServer.off('error', reject);
          resolve();
        });
      });
      url = urlOf(httpServer, options.tls ? 'https' : 'http');
      if (metricsServer) {
        await new Promise<void>((resolve, reject) => {
          metricsServer.once('error', reject);
          metricsServer.listen(options.metricsPort, options.metricsHost ?? '127.0.0.1', () => resolve());
        });
        metricsUrl = `${urlOf(metricsServer, 'http')}/metrics`;
      }
      log.info({ url, relayId }, 'relay listening');
      return url;
    },
    async stop(stopOptions = {}) {
      const graceMs = stopOptions.graceMs ?? 0;
      shuttingDown = true;
      const running = transfers.size;
      log.info({ running, graceMs }, 'draining');
      io.to(JOINED).emit(
        'relay.error',
        errorMessage('SHUTTING_DOWN', running > 0 && graceMs > 0 ? `The relay is shutting down; running transfers have ${Math.round(graceMs / 1000)} s to finish.` : 'The relay is shutting down.'),
      );
      const deadline = Date.now() + graceMs;
      while (transfers.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const transfer of [...transfers.values()]) abort(transfer, transfer.from, new SftError('SHUTTING_DOWN', 'The relay shut down before the transfer finished.'));
      // A client that never answers the WebSocket close would hold this for 30 s; do not wait for it.
      await Promise.race([new Promise<void>((resolve) => io.close(() => resolve())), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
      httpServer.closeAllConnections();
      if (metricsServer) await new Promise<void>((resolve) => metricsServer.close(() => resolve()));
      await audit.close();
      transfers.clear();
    },
    async reload(update) {
      if (update.tokens) tokens = hashTokens(update.tokens);
      if (update.allowList !== undefined) allowList = update.allowList;
      const list = allowList;
      if (!list) return;
      for (const s of await io.in(JOINED).fetchSockets()) {
        if (s.data.peer && !list.has(s.data.peer.peerId)) {
          s.emit('relay.error', errorMessage('NOT_ALLOWED', "This peer id was removed from the relay's allow-list."));
          s.disconnect(true);
        }
      }
    },
    stats() {
      return { peers: io.sockets.adapter.rooms.get(JOINED)?.size ?? 0, transfers: transfers.size, connections: io.engine.clientsCount };
    },
  };
}

const DEFAULT_TEAM = 'default';

function hashTokens(tokens: readonly TeamToken[]): Array<{ hash: Buffer; team: string }> {
  return tokens
    .map((t) => (typeof t === 'string' ? { token: t, team: DEFAULT_TEAM } : t))
    .filter((t) => t.token.length > 0)
    .map((t) => ({ hash: crypto.createHash('sha256').update(t.token).digest(), team: t.team }));
}

function urlOf(server: http.Server, scheme: 'http' | 'https'): string {
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `${scheme}://${host}:${address.port}`;
}

const KNOWN_EVENTS = new Set<string>(['hello', 'offer', 'answer', 'chunk', 'ack', 'done', 'cancel']);

