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
import type { z } from 'zod';
import {
  AckSchema,
  AnswerSchema,
  CancelSchema,
  HandshakeSchema,
  HelloSchema,
  MAX_MESSAGE_BYTES,
  OfferSchema,
  PROTOCOL_VERSION,
  DEFAULT_RESUME_GRACE_MS,
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
import { connectCluster, type ClusterLink } from './cluster';

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
  /**
   * Offers per client (peer id) per minute (default 60), and per remote address across every
   * identity behind it (default 600): a bucket of that size refilled evenly. Past either, an offer
   * is refused with RATE_LIMITED (which counts towards disconnection). In a cluster, for all nodes
   * together (a bucket in Redis, besides each node's own).
   */
  offersPerClientPerMinute?: number;
  offersPerAddressPerMinute?: number;
  /** Joins per peer id per minute (default 30), from any address and, in a cluster, any node; past it JOIN_RATE_LIMITED. */
  joinsPerPeerPerMinute?: number;
  /** Time a new connection has to prove its identity. */
  helloTimeoutMs?: number;
  /** How long after a dropped connection the sender may offer the same transfer again to resume it. */
  resumeGraceMs?: number;
  auditLog?: string | AuditSink;
  logger?: pino.Logger;
  /** Must be unique per node of a cluster (the default is random). */
  relayId?: string;
  /**
   * Join a cluster of relay nodes through this Redis server (`redis://` or `rediss://` URL):
   * presence, offers and transfers then work between clients on different nodes. Each transfer
   * is held by the node its sender is connected to; see `server/cluster.ts` and the README.
   */
  redis?: string;
  /**
   * In a cluster, how often each node tells the others which peers it holds (default 5000 ms). A
   * node silent for three intervals is taken for dead: its peers are announced as gone and their
   * transfers end as after a disconnect, unless they have joined another node meanwhile.
   */
  clusterHeartbeatMs?: number;
}

type RelaySocket = Socket<ClientToRelayEvents, RelayToClientEvents, ClusterEvents, SocketData>;

/** A message of a transfer's recipient, forwarded by the recipient's node to the transfer's node. */
type LegMessage =
  | { kind: 'answer'; peerId: string; message: z.infer<typeof AnswerSchema> }
  | { kind: 'done'; peerId: string; message: z.infer<typeof DoneSchema> }
  | { kind: 'cancel'; peerId: string; message: z.infer<typeof CancelSchema> };
/** The transfer's node answers for it; every other node answers null. */
type LegReply = { ok: true; from: string; chunkCount: number } | { ok: false; error: ErrorMessage } | null;
/** `from` is empty and `chunkCount` infinite until the transfer's node has answered. */
type RemoteLeg = { transferId: string; peerId: string; socketId: string; from: string; chunkCount: number; acked: number; live: boolean };
/** Remote legs are per recipient: several recipients of one transfer may be connected to one node. */
const legKey = (transferId: string, peerId: string) => `${transferId} ${peerId}`;
/**
 * A transfer that ended recently. `resumable`: the legs cut off by a dropped connection (their
 * recipient's, the sender's, or a relay node's), each with when; only they may be offered again.
 * `done`: the legs delivered, with their receipts (also those of earlier attempts).
 */
type EndedEntry = {
  from: string;
  at: number;
  resumable: Array<{ to: string; at: number; expired?: true }>;
  done: Array<{ to: string; receipt: string }>;
  chunkCount: number;
  /** The sizes it was offered with: a resume must declare the same (absent from older nodes). */
  cipherBytes?: number;
  chunkSize?: number;
  /** Resumed on another node since: that node's entry is the transfer's now. */
  moved?: true;
};

/**
 * Messages between the nodes of a cluster (Socket.IO server-side events, through Redis). The
 * nodes trust each other: whoever can publish to the Redis server speaks for every node.
 */
interface ClusterEvents {
  /** Is this transfer id live or recently ended on your node? (At every offer.) */
  'sft:lookup': (transferId: string, reply: (found: { live: boolean; ended?: EndedEntry }) => void) => void;
  'sft:leg': (leg: LegMessage, reply: (result: LegReply) => void) => void;
  'sft:ack': (ack: { transferId: string; index: number; peerId: string }) => void;
  /** A recipient's node stopped its leg (it does not read what it acknowledges). */
  'sft:fail': (failure: { transferId: string; peerId: string; code: ErrorCode; message: string }) => void;
  /** This transfer was resumed on the sending node: an entry for it elsewhere is out of date. */
  'sft:resumed': (transferId: string) => void;
  /** This identity's older connections are gone: end their transfers, as after a disconnect. */
  'sft:gone': (peerId: string, reply?: (ok: true) => void) => void;
  /** Replace (disconnect with REPLACED) these connections of yours: their identity joined again. */
  'sft:replace': (socketIds: string[], reply: (ok: true) => void) => void;
  /** A cancel for ends that may be away: each node keeps it for those not connected to it. */
  'sft:pendingCancel': (pending: { peerIds: string[]; message: Parameters<RelayToClientEvents['cancel']>[0] }) => void;
  /** Sent every heartbeat: the peers joined on this node. `peers: null` says the node is leaving. */
  'sft:alive': (node: { relayId: string; peers: string[] | null }) => void;
}

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
  /** Legs cut off by a dropped connection, with when: resumable once the transfer has ended. */
  readonly interrupted: Map<string, number>;
  /** Legs delivered by an earlier attempt of this transfer (not offered again), with their receipts. */
  readonly earlierDone: ReadonlyArray<{ to: string; receipt: string }>;
  nextIndex: number;
  cipherBytes: number;
}

const roomOf = (peerId: string) => `peer:${peerId}`;
const JOINED = 'joined';
/** Refused messages after which a client is disconnected. */
const MAX_VIOLATIONS = 50;
const RECENTLY_ENDED = 10_000;
/**
 * Past RECENTLY_ENDED, ended transfers still within their grace period are kept, up to this many:
 * a flood of short transfers must not push other people's resumable ones out (a few hundred bytes each).
 */
const ENDED_WITHIN_GRACE = 100_000;

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

/** 127.0.0.1, ::1, localhost: an address only this machine can reach. */
export const isLoopbackHost = (host: string): boolean => host === 'localhost' || host === '::1' || host.startsWith('127.');

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
  /** What a node may hold unsent for a recipient, per transfer it receives, before SLOW_CONSUMER. */
  const backlogPerTransfer = windowSize * 2 * (maxChunkSize + TAG_BYTES);
  const maxFileSize = options.maxFileSize ?? null;
  const controlRate = options.controlRate ?? { perSecond: 20, burst: 60 };
  const joinLimiter = new KeyedRateLimiter(options.joinRate?.perSecond ?? 5, options.joinRate?.burst ?? 30);
  /**
   * A limit of `n` a minute per key that every node of a cluster enforces together: each node's
   * own bucket first (a flood from one client never reaches Redis), then the cluster's, a token
   * bucket in Redis, so that a client spreading its connections over the nodes gets no more. A
   * single relay has only its own. Should Redis not answer within a second, the node's own limit
   * alone applies (logged): a Redis outage must not stop offers and joins.
   */
  const perMinute = (name: string, n: number) => {
    const local = new KeyedRateLimiter(n / 60, n);
    return async (key: string): Promise<boolean> => {
      if (!local.take(key)) return false;
      if (!cluster) return true;
      const verdict = cluster.takeBudget(`sft:limit:${name}:${key}`, 1, n / 60, n);
      const late = new Promise<'late'>((resolve) => setTimeout(resolve, 1000, 'late').unref());
      try {
        const answer = await Promise.race([verdict, late]);
        if (answer !== 'late') return answer;
        log.warn({ limit: name }, "Redis did not answer a rate-limit check in time; this node's own limit applied");
      } catch (error) {
        log.warn({ limit: name, err: error }, "a rate-limit check in Redis failed; this node's own limit applied");
      }
      verdict.catch(() => undefined);
      return true;
    };
  };
  const clientOffers = perMinute('offers-per-client', options.offersPerClientPerMinute ?? 60);
  const addressOffers = perMinute('offers-per-address', options.offersPerAddressPerMinute ?? 600);
  const peerJoins = perMinute('joins-per-peer', options.joinsPerPeerPerMinute ?? 30);
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
  const ended = new Map<string, EndedEntry>();
  const resumeGraceMs = options.resumeGraceMs ?? DEFAULT_RESUME_GRACE_MS;
  /**
   * Cancels of interrupted transfers for ends that were not connected here when they came: given
   * to them when they join again within the grace period, so that they see CANCELLED rather than
   * EXPIRED when it runs out. By peer id, then transfer id; bounded like `ended`.
   */
  const pendingCancels = new Map<string, Map<string, { message: Parameters<RelayToClientEvents['cancel']>[0]; at: number }>>();
  let pendingCount = 0;
  if (!Number.isSafeInteger(resumeGraceMs) || resumeGraceMs < 0) throw new RangeError('resumeGraceMs must be a whole number of milliseconds.');
  /** The link to the other nodes, from start() on, when `redis` is set; a single relay has none. */
  let cluster: ClusterLink | undefined;
  /**
   * Cluster only: accepted legs of transfers held by other nodes whose recipient is connected
   * here, so that its acknowledgements can be checked and forwarded, and its transfer interrupted
   * when the sender's node is gone. A leg that ends here stays, not `live`, so that acknowledgements
   * still in flight are dropped quietly (as for `ended`), until RECENTLY_ENDED newer ones push it
   * out. A leg the other node ended is not reported back; it stays `live` until then, harmlessly.
   */
  const remoteLegs = new Map<string, RemoteLeg>();

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
    if (req.url === '/readyz') {
      if (shuttingDown) return json(503, { ready: false, reason: 'shutting down' });
      if (cluster && !cluster.ready()) return json(503, { ready: false, reason: 'redis unavailable' });
      return json(200, { ready: true });
    }
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

  const io = new Server<ClientToRelayEvents, RelayToClientEvents, ClusterEvents, SocketData>(httpServer, {
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
          // Told to slow down and carrying on: disconnected as for unacknowledged messages.
          if (error.code === 'RATE_LIMITED' && ++violations >= MAX_VIOLATIONS) socket.disconnect(true);
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
          metrics.refused('BAD_PROOF');
          // Most often the relay's own configuration: clients dial a URL that publicUrl does not list.
          if (!here) log.info({ origin, publicUrls: [...publicOrigins] }, 'refused a join signed for another address (check publicUrl)');
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
        // Before replacing anything: an identity rejoining in a loop must not churn its connection.
        if (!(await peerJoins(peer.peerId))) {
          audit.write({ event: 'refused', code: 'JOIN_RATE_LIMITED', address: clientAddress(socket), peer: peer.peerId });
          metrics.refused('JOIN_RATE_LIMITED');
          reply({ ok: false, error: errorMessage('JOIN_RATE_LIMITED', 'This identity joined too often; try again in a minute.') });
          socket.disconnect(true);
          return;
        }
        clearTimeout(helloTimer);
        // One connection per identity: a reconnecting client replaces its stale connection.
        const elsewhere: string[] = [];
        for (const old of await io.in(roomOf(peer.peerId)).fetchSockets()) {
          const here = io.sockets.sockets.get(old.id);
          if (!here) {
            elsewhere.push(old.id); // On another node: only that node can mark and close it.
            continue;
          }
          replace(here);
        }
        if (cluster) {
          if (elsewhere.length > 0) await clusterRequest('sft:replace', elsewhere);
          // Every node ends the transfers of this identity's older connections, as a disconnect
          // would: also those of a connection whose node died without telling anyone.
          await clusterRequest('sft:gone', peer.peerId);
          peerGone(peer.peerId);
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
        // Cancels it missed go first: a sender back from an outage would otherwise offer the
        // transfer again the moment it is joined, before it heard that the transfer was called off.
        // (Gone again meanwhile: they stay for its next join.)
        if (!socket.connected) return;
        deliverPendingCancels(socket, peer.peerId);
        reply({ ok: true, peers });
      }),
    );

    socket.on(
      'offer',
      guard('offer', true, async (raw: unknown, reply: Reply) => {
        if (typeof reply !== 'function') throw new SftError('BAD_MESSAGE', 'offer needs an acknowledgement callback.');
        if (shuttingDown) throw new SftError('SHUTTING_DOWN', 'The relay is shutting down and takes no new transfers.');
        if (!(await clientOffers(socket.data.peer!.peerId)) || !(await addressOffers(clientAddress(socket)))) {
          throw new SftError('RATE_LIMITED', 'Too many offers; slow down.');
        }
        const offer = parse(OfferSchema, raw, 'offer');
        const me = socket.data.peer!;
        if (offer.sender.peerId !== me.peerId || offer.sender.signPublicKey !== me.signPublicKey || offer.sender.agreePublicKey !== me.agreePublicKey) {
          throw new SftError('NOT_PARTICIPANT', 'An offer must come from the identity that joined.');
        }
        if (transfers.has(offer.transferId)) throw new SftError('DUPLICATE_TRANSFER', 'That transfer id is already in use.');
        // In a cluster the id may be live, or have ended, on another node (a sender that moved).
        const stanzaRecipients = offer.stanzas.map((s) => s.to);
        if (new Set(stanzaRecipients).size !== stanzaRecipients.length || stanzaRecipients.includes(me.peerId)) {
          throw new SftError('BAD_MESSAGE', 'Recipients must be distinct peers other than the sender.');
        }
        // A resume may name the legs it continues (the others finished, or failed for good).
        if (offer.resumeTo && (!offer.resume || new Set(offer.resumeTo).size !== offer.resumeTo.length || offer.resumeTo.some((id) => !stanzaRecipients.includes(id)))) {
          throw new SftError('BAD_MESSAGE', 'resumeTo must name distinct recipients of the offer, on a resume.');
        }
        const named = offer.resumeTo ?? stanzaRecipients;
        const local = ended.get(offer.transferId);
        const previous = (local?.moved ? undefined : local) ?? (cluster ? await lookUp(offer.transferId) : undefined);
        if (previous && (!offer.resume || previous.from !== me.peerId)) throw new SftError('DUPLICATE_TRANSFER', 'That transfer id is already in use.');
        // Legs delivered already are never offered again: the sender may just have missed the news.
        const delivered = previous ? previous.done.filter((d) => named.includes(d.to)) : [];
        const to = named.filter((id) => !delivered.some((d) => d.to === id));
        for (const id of previous ? to : []) {
          // Only a leg cut off by a dropped connection may be offered again, within the grace period.
          const leg = previous!.resumable.find((r) => r.to === id);
          if (!leg) throw new SftError('DUPLICATE_TRANSFER', 'That transfer id is already in use, and a recipient it names was not interrupted: it cannot be resumed.');
          if (Date.now() - leg.at > resumeGraceMs) {
            throw new SftError('EXPIRED', `The transfer was interrupted more than ${Math.round(resumeGraceMs / 1000)} s ago and can no longer be resumed.`);
          }
        }
        // A resume continues the transfer it names: the sizes it was offered (and charged) with
        // (an entry from a node of an older version has only the chunk count).
        const sameSizes = (p: EndedEntry) =>
          p.chunkCount === offer.chunkCount && (p.cipherBytes ?? offer.cipherBytes) === offer.cipherBytes && (p.chunkSize ?? offer.chunkSize) === offer.chunkSize;
        if (previous && !sameSizes(previous)) throw new SftError('SIZE_MISMATCH', 'A resume must declare the sizes of the transfer it continues.');
        const replayDelivered = () => {
          for (const { to: id, receipt } of delivered) {
            socket.emit('answer', { transferId: offer.transferId, accept: true, resumeFrom: previous!.chunkCount, from: id });
            socket.emit('done', { transferId: offer.transferId, receipt, from: id });
          }
        };
        if (to.length === 0) {
          // Delivered to every leg named, but the sender's connection dropped before it heard so: tell it now.
          reply({ ok: true });
          return replayDelivered();
        }
        if (offer.chunkSize > maxChunkSize) throw new SftError('MESSAGE_TOO_LARGE', `Chunks may be at most ${maxChunkSize} bytes on this relay.`);
        const layout = layoutFromCipher(offer.cipherBytes, offer.chunkSize, offer.chunkCount);
        if (!layout) throw new SftError('SIZE_MISMATCH', 'The declared sizes are inconsistent.');
        if (maxFileSize !== null && layout.plainBytes > maxFileSize) {
          throw new SftError('FILE_TOO_LARGE', `This relay accepts transfers of at most ${maxFileSize} bytes.`);
        }
        checkTransferLimits(me.peerId);
        const online = new Map((await io.in(to.map(roomOf)).fetchSockets()).flatMap((s) => (s.data.peer ? [[s.data.peer.peerId, s.data.team] as const] : [])));
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
        // In a cluster the budget lives in Redis, so a client that moves between nodes keeps it.
        const covered = (cost: number) => (cluster ? cluster.takeBudget(`sft:budget:${me.peerId}`, cost, hourly! / 3600, hourly!) : byteBudgets!.take(me.peerId, cost));
        if (hourly !== null && !previous && !(await covered(offer.cipherBytes))) {
          throw new SftError('QUOTA_EXCEEDED', `This relay allows ${hourly} bytes per client per hour; that budget is used up for now.`);
        }
        // The budget was awaited above (Redis in a cluster, a resolved value on one node, which still
        // yields): check once more what offers handled meanwhile may have changed.
        if (transfers.has(offer.transferId)) throw new SftError('DUPLICATE_TRANSFER', 'That transfer id is already in use.');
        checkTransferLimits(me.peerId);
        // Gone during an await above: its disconnect found nothing to end, so nothing may start now.
        if (!socket.connected) throw new SftError('PEER_GONE', 'The sender disconnected.');
        if (previous && cluster) io.serverSideEmit('sft:resumed', offer.transferId);
        transfers.set(offer.transferId, {
          id: offer.transferId,
          from: me.peerId,
          layout,
          recipients: new Map(to.map((id) => [id, { state: 'offered', acked: 0 }])),
          startedAt: Date.now(),
          streaming: false,
          resumed: offer.resume !== undefined,
          // Legs still waiting that this resume does not name (their recipients are not back yet)
          // stay resumable after it: the sender offers them in a later round.
          interrupted: new Map((previous?.resumable ?? []).filter((r) => !r.expired && !to.includes(r.to)).map((r) => [r.to, r.at])),
          earlierDone: previous?.done ?? [],
          nextIndex: 0,
          cipherBytes: 0,
        });
        audit.write({ event: 'offer', transfer: offer.transferId, from: me.peerId, to, cipherBytes: offer.cipherBytes, chunks: offer.chunkCount });
        metrics.offer();
        for (const target of toPeers(to)) target.emit('offer', offer);
        reply({ ok: true });
        replayDelivered();
      }),
    );

    // A recipient's answer, done and cancel are handled where the transfer is held: here, or on
    // the sender's node, which the recipient's node asks and waits for (so the acknowledgement
    // still says whether it was taken).
    socket.on(
      'answer',
      guard('answer', true, (raw: unknown, reply?: Reply) => {
        const answer = parse(AnswerSchema, raw, 'answer');
        if (!cluster || transfers.has(answer.transferId)) return void answerLeg(me(), answer);
        // Recorded before the answer goes: the sender may start streaming, and this recipient
        // acknowledging, before every node has replied to the forwarded answer.
        const key = legKey(answer.transferId, me());
        const leg: RemoteLeg = { transferId: answer.transferId, peerId: me(), socketId: socket.id, from: '', chunkCount: Number.POSITIVE_INFINITY, acked: answer.resumeFrom ?? 0, live: answer.accept };
        if (answer.accept) rememberLeg(key, leg);
        return forwardLeg({ kind: 'answer', peerId: me(), message: answer }).then(
          ({ from, chunkCount }) => {
            Object.assign(leg, { from, chunkCount });
            reply?.({ ok: true });
          },
          (error: unknown) => {
            if (remoteLegs.get(key) === leg) remoteLegs.delete(key);
            throw error;
          },
        );
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
        for (const [id] of receiving) {
          const backlog = backlogOf(id);
          // The scan over transfers runs only when one transfer's allowance is already exceeded.
          if (backlog > backlogPerTransfer && backlog > backlogPerTransfer * transfersTo(id)) {
            abort(transfer, id, new SftError('SLOW_CONSUMER', 'A recipient is not reading the data it acknowledges; its transfer was stopped.'));
          }
        }
        receiving = receiving.filter(([, r]) => r.state === 'accepted');
        if (receiving.length === 0) return;
        transfer.nextIndex += 1;
        transfer.cipherBytes += data.length;
        // On a resume, each leg gets the stream from its own resume point on: a recipient ahead of
        // the slowest one gets no chunk it already holds. (A leg's `acked` never passes the chunk
        // being sent, except a resume point not yet reached, so this is exactly index >= its start.)
        const targets = receiving.filter(([, r]) => r.acked <= index).map(([id]) => id);
        if (targets.length > 0) for (const target of toPeers(targets)) target.emit('chunk', transfer.id, index as number, data);
        metrics.relayed(data.length * targets.length);
      }),
    );

    socket.on(
      'ack',
      guard('ack', false, (raw: unknown) => {
        const ack = parse(AckSchema, raw, 'ack');
        if (!cluster || transfers.has(ack.transferId)) {
          if (!transfers.has(ack.transferId) && ended.has(ack.transferId)) return;
          return ackLeg(me(), ack);
        }
        const leg = remoteLegs.get(legKey(ack.transferId, me()));
        if (!leg) {
          if (ended.has(ack.transferId)) return;
          throw new SftError('UNKNOWN_TRANSFER', 'No such transfer.');
        }
        if (!leg.live) return; // Was in flight when the leg ended.
        // Bounded here, not only on the transfer's node: each one goes to every node.
        if (ack.index + 1 <= leg.acked || ack.index >= leg.chunkCount) throw new SftError('BAD_MESSAGE', 'That acknowledgement does not match what was sent.');
        leg.acked = ack.index + 1;
        // The chunks of this leg are buffered here, not on the sender's node, so the check for a
        // recipient that acknowledges what it does not read is made here, at each acknowledgement.
        const backlog = backlogOf(me());
        if (backlog > backlogPerTransfer && backlog > backlogPerTransfer * Math.max(1, acceptedBy(me()) + legsOf(me()))) {
          leg.live = false;
          const message = 'A recipient is not reading the data it acknowledges; its transfer was stopped.';
          io.serverSideEmit('sft:fail', { transferId: ack.transferId, peerId: me(), code: 'SLOW_CONSUMER', message });
          return;
        }
        io.serverSideEmit('sft:ack', { ...ack, peerId: me() });
      }),
    );

    socket.on(
      'done',
      guard('done', true, (raw: unknown, reply?: Reply) => {
        const ref = parse(DoneSchema, raw, 'done');
        if (!cluster || transfers.has(ref.transferId)) return doneLeg(me(), ref);
        return forwardLeg({ kind: 'done', peerId: me(), message: ref }).then(() => {
          endLeg(ref.transferId, me());
          reply?.({ ok: true });
        });
      }),
    );

    socket.on(
      'cancel',
      guard('cancel', true, (raw: unknown, reply?: Reply) => {
        const cancel = parse(CancelSchema, raw, 'cancel');
        // Held here, running or waiting to be resumed: this node ends it. Otherwise its node does
        // (also when this recipient's leg runs on another node, resumed there).
        const runsElsewhere = remoteLegs.get(legKey(cancel.transferId, me()))?.live === true;
        if (!cluster || transfers.has(cancel.transferId) || (!runsElsewhere && waitsHere(cancel.transferId, me()))) return cancelLeg(me(), cancel);
        return forwardLeg({ kind: 'cancel', peerId: me(), message: cancel }).then(() => {
          endLeg(cancel.transferId, me());
          reply?.({ ok: true });
        });
      }),
    );

    socket.on('disconnect', (reason) => {
      clearTimeout(helloTimer);
      const peer = socket.data.peer;
      if (!peer) return;
      peerGone(peer.peerId, socket.id);
      // The other nodes end this peer's transfers they hold, and its legs they serve.
      if (cluster) io.serverSideEmit('sft:gone', peer.peerId);
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
  });

  function asRecipient(transferId: string, peerId: string) {
    const transfer = transfers.get(transferId);
    if (!transfer) throw new SftError('UNKNOWN_TRANSFER', 'No such transfer.');
    const recipient = transfer.recipients.get(peerId);
    if (!recipient) throw new SftError('NOT_PARTICIPANT', 'Not your transfer.');
    return { transfer, recipient };
  }

  // ---- A recipient's messages about a transfer held by this node (its own or forwarded). ----

  /** Records an answer; returns the transfer's sender. */
  function answerLeg(peerId: string, answer: z.infer<typeof AnswerSchema>): string {
    const { transfer, recipient } = asRecipient(answer.transferId, peerId);
    if (recipient.state !== 'offered') throw new SftError('BAD_MESSAGE', 'This offer was already answered.');
    if (answer.resumeFrom !== undefined && (!transfer.resumed || !answer.accept || answer.resumeFrom > transfer.layout.chunkCount)) {
      throw new SftError('BAD_MESSAGE', 'A resume point must lie within the transfer.');
    }
    recipient.state = answer.accept ? 'accepted' : 'declined';
    recipient.acked = answer.resumeFrom ?? 0;
    if (!answer.accept) metrics.leg('declined');
    audit.write({ event: answer.accept ? 'accept' : 'decline', transfer: transfer.id, from: transfer.from, to: peerId });
    for (const target of toPeers([transfer.from])) target.emit('answer', { ...answer, from: peerId });
    settle(transfer);
    return transfer.from;
  }

  function ackLeg(peerId: string, ack: z.infer<typeof AckSchema>): void {
    const { transfer, recipient } = asRecipient(ack.transferId, peerId);
    // Strictly increasing: a repeated acknowledgement carries no news and is not forwarded.
    if (recipient.state !== 'accepted' || ack.index >= transfer.nextIndex || ack.index + 1 <= recipient.acked) {
      throw new SftError('BAD_MESSAGE', 'That acknowledgement does not match what was sent.');
    }
    recipient.acked = ack.index + 1;
    for (const target of toPeers([transfer.from])) target.emit('ack', { ...ack, from: peerId });
  }

  function doneLeg(peerId: string, ref: z.infer<typeof DoneSchema>): void {
    const { transfer, recipient } = asRecipient(ref.transferId, peerId);
    if (recipient.state !== 'accepted' || recipient.acked !== transfer.layout.chunkCount) {
      throw new SftError('BAD_MESSAGE', 'A transfer is done only after its last chunk.');
    }
    recipient.state = 'done';
    recipient.receipt = ref.receipt;
    metrics.leg('complete');
    audit.write({ event: 'complete', transfer: transfer.id, from: transfer.from, to: peerId, cipherBytes: transfer.cipherBytes, durationMs: Date.now() - transfer.startedAt });
    for (const target of toPeers([transfer.from])) target.emit('done', { ...ref, from: peerId });
    settle(transfer);
  }

  function cancelLeg(peerId: string, cancel: z.infer<typeof CancelSchema>): void {
    const transfer = transfers.get(cancel.transferId);
    if (!transfer) return cancelInterrupted(peerId, cancel);
    // Legs waiting for a later round (cut off earlier, or in this one) are called off too: all of
    // them when the sender cancels, the recipient's own when it does.
    const bySender = transfer.from === peerId;
    const waiting = [...transfer.interrupted.keys()].filter((to) => bySender || to === peerId);
    if (!bySender && !transfer.recipients.has(peerId) && waiting.length === 0) throw new SftError('NOT_PARTICIPANT', 'Not your transfer.');
    for (const to of waiting) transfer.interrupted.delete(to);
    callOffWaiting(transfer.id, transfer.from, waiting, peerId, cancel);
    if (bySender || transfer.recipients.has(peerId)) abort(transfer, peerId, new SftError(cancel.code, cancel.message ?? 'Cancelled.'), 'cancel');
  }

  /** A cancel for a transfer interrupted by a dropped connection and not resumed yet. */
  function cancelInterrupted(peerId: string, cancel: z.infer<typeof CancelSchema>): void {
    const entry = ended.get(cancel.transferId);
    const legs = entry ? entry.resumable.filter((r) => entry.from === peerId || r.to === peerId) : [];
    if (!entry || legs.length === 0) throw new SftError('UNKNOWN_TRANSFER', 'No such transfer.');
    entry.resumable = entry.resumable.filter((r) => !legs.includes(r));
    callOffWaiting(cancel.transferId, entry.from, legs.map((l) => l.to), peerId, cancel);
  }

  /**
   * Legs waiting to be resumed that a cancel ends: they can no longer be resumed, and the other
   * ends, waiting to resume, are told now instead of finding out when the grace period runs out.
   * An end that is away is told when it joins again within the grace period, on whichever node
   * it joins.
   */
  function callOffWaiting(transferId: string, sender: string, legs: readonly string[], by: string, cancel: z.infer<typeof CancelSchema>): void {
    if (legs.length === 0) return;
    for (const to of legs) {
      metrics.leg('cancelled');
      audit.write({ event: 'cancel', transfer: transferId, from: sender, to, by, code: cancel.code, cipherBytes: 0, durationMs: 0 });
    }
    const notify = by === sender ? legs : [sender];
    const forwarded = { transferId, code: cancel.code, message: cancel.message ?? 'Cancelled.', from: by };
    for (const target of toPeers(notify)) target.emit('cancel', forwarded);
    keepForAbsent(notify, forwarded);
    // An end that is away may come back on any node of a cluster.
    if (cluster) io.serverSideEmit('sft:pendingCancel', { peerIds: [...notify], message: forwarded });
  }

  /** Whether a transfer interrupted here has a leg of this peer's (any, for its sender) waiting to be resumed. */
  function waitsHere(transferId: string, peerId: string): boolean {
    const entry = ended.get(transferId);
    return !!entry && !entry.moved && entry.resumable.some((r) => !r.expired && (entry.from === peerId || r.to === peerId));
  }

  /**
   * Legs not offered again within the grace period: their ends are told EXPIRED now. A recipient
   * waits past its own timer while its sender is online (it may be serving other recipients
   * first), so this notice is what ends its wait when the sender never comes back to it. The leg
   * stays listed, so that a late offer is refused as EXPIRED.
   */
  async function expireWaiting(): Promise<void> {
    const now = Date.now();
    // Cancels kept for ends that never came back within the grace period are of no use any more.
    for (const [peerId, mine] of pendingCancels) {
      for (const [transferId, { at }] of mine) {
        if (now - at <= resumeGraceMs) continue;
        mine.delete(transferId);
        pendingCount -= 1;
      }
      if (mine.size === 0) pendingCancels.delete(peerId);
    }
    for (const [transferId, entry] of [...ended]) {
      if (entry.moved) continue;
      const due = entry.resumable.filter((leg) => !leg.expired && now - leg.at > resumeGraceMs);
      if (due.length === 0) continue;
      for (const leg of due) leg.expired = true;
      // Resumed since, here or on another node: it runs under its new attempt, nothing expired.
      if (transfers.has(transferId)) continue;
      if (cluster && (await clusterRequest('sft:lookup', transferId)).some((found) => found.live)) continue;
      for (const leg of due) {
        const message = { transferId, code: 'EXPIRED' as const, message: 'The transfer was not resumed within the grace period.', from: leg.to };
        for (const target of toPeers([leg.to, entry.from])) target.emit('cancel', message);
      }
    }
  }
  let expiring = false;
  const expiry = setInterval(() => {
    if (expiring) return;
    expiring = true;
    expireWaiting()
      .catch((error: unknown) => log.error({ err: error }, 'checking interrupted transfers for expiry failed'))
      .finally(() => (expiring = false));
  }, Math.max(250, Math.min(5_000, resumeGraceMs / 4)));
  expiry.unref();

  /** Keeps a cancel for those of `peerIds` not connected to this node (see pendingCancels). */
  function keepForAbsent(peerIds: readonly string[], message: Parameters<RelayToClientEvents['cancel']>[0]): void {
    for (const id of peerIds) {
      if ((io.sockets.adapter.rooms.get(roomOf(id))?.size ?? 0) > 0 || pendingCount >= RECENTLY_ENDED) continue;
      const mine = pendingCancels.get(id) ?? new Map();
      if (!mine.has(message.transferId)) pendingCount += 1;
      mine.set(message.transferId, { message, at: Date.now() });
      pendingCancels.set(id, mine);
    }
  }

  /** Gives a peer that has just joined the cancels it missed while away (see pendingCancels). */
  function deliverPendingCancels(socket: RelaySocket, peerId: string): void {
    const mine = pendingCancels.get(peerId);
    if (!mine) return;
    pendingCancels.delete(peerId);
    pendingCount -= mine.size;
    for (const { message, at } of mine.values()) if (Date.now() - at <= resumeGraceMs) socket.emit('cancel', message);
  }

  /**
   * A peer's connection is gone (or, with `socketId` unset, every connection it had before the
   * one now joining): its legs of transfers held here end as after a disconnect (every live leg,
   * when it is the sender), resumable, and the legs it received here from other nodes' transfers
   * are forgotten. A
   * recipient connected here whose sender it was is told, because the sender's node may be the
   * one that died (if it is alive it says the same; the second notice changes nothing).
   */
  function peerGone(peerId: string, socketId?: string): void {
    for (const transfer of [...transfers.values()]) {
      if (transfer.from === peerId || transfer.recipients.has(peerId)) {
        // The legs cut off (all of them when the sender is gone), answered or not, may be offered
        // again once the transfer has ended; the others carry on.
        const now = Date.now();
        for (const [id, r] of transfer.recipients) {
          const cut = transfer.from === peerId || id === peerId;
          if (cut && (r.state === 'accepted' || r.state === 'offered')) transfer.interrupted.set(id, now);
        }
        abort(transfer, peerId, new SftError('PEER_GONE', 'A participant disconnected.'));
      }
    }
    for (const leg of remoteLegs.values()) {
      if (!leg.live) continue;
      if (leg.peerId === peerId && (socketId === undefined || leg.socketId === socketId)) leg.live = false;
      else if (leg.from === peerId) {
        leg.live = false;
        io.local.to(roomOf(leg.peerId)).emit('cancel', { transferId: leg.transferId, code: 'PEER_GONE', message: 'A participant disconnected.', from: peerId });
      }
    }
  }

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
    if (notify.length > 0) for (const target of toPeers(notify)) target.emit('cancel', message);
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

  /** Transfers held here that this peer accepted and is receiving. */
  function acceptedBy(peerId: string): number {
    let n = 0;
    for (const t of transfers.values()) if (t.recipients.get(peerId)?.state === 'accepted') n += 1;
    return n;
  }

  function transfersTo(peerId: string): number {
    return Math.max(1, acceptedBy(peerId));
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
    // A leg's grace runs from when its sender could offer it again: the end of the stream it was
    // cut off from (for a recipient that dropped while others went on, later than the cut).
    const now = Date.now();
    const resumable = [...transfer.interrupted].map(([to, at]) => ({ to, at: Math.max(at, now) }));
    const { chunkCount, cipherBytes, chunkSize } = transfer.layout;
    ended.set(transfer.id, { from: transfer.from, at: now, resumable, done: [...transfer.earlierDone, ...done], chunkCount, cipherBytes, chunkSize });
    // The oldest go first (the map is in order of ending); one still within the grace period only
    // past the larger bound. Its grace counts from the entry's own end, which bounds its legs'.
    while (ended.size > RECENTLY_ENDED) {
      const [oldestId, oldest] = ended.entries().next().value!;
      if (ended.size <= ENDED_WITHIN_GRACE && now - oldest.at <= resumeGraceMs) break;
      ended.delete(oldestId);
    }
  }

  /** Disconnects a connection whose identity joined again; no `peer.left` is sent for it. */
  function replace(socket: RelaySocket): void {
    socket.data.replaced = true;
    socket.emit('relay.error', errorMessage('REPLACED', 'This identity connected again from elsewhere.'));
    socket.disconnect(true);
  }

  /**
   * Where to emit for these peers. In a cluster, peers connected here are reached without Redis,
   * and each other peer through its own room's channel, which only its node reads.
   */
  function toPeers(peerIds: readonly string[]) {
    if (!cluster) return [io.to(peerIds.map(roomOf))];
    const here = peerIds.filter((id) => io.sockets.adapter.rooms.has(roomOf(id)));
    const targets = peerIds.filter((id) => !here.includes(id)).map((id) => io.to(roomOf(id)));
    return here.length > 0 ? [io.local.to(here.map(roomOf)), ...targets] : targets;
  }

  // ---- Cluster: messages between nodes (only with `redis`). ----

  /** Asks every other node; resolves with the answers that came (a node that died gives none). */
  function clusterRequest<E extends 'sft:lookup' | 'sft:leg' | 'sft:gone' | 'sft:replace'>(event: E, arg: Parameters<ClusterEvents[E]>[0]) {
    type Answer = Parameters<NonNullable<Parameters<ClusterEvents[E]>[1]>>[0];
    // Through the adapter itself, whose promise is the only place a failure to reach Redis shows.
    const adapter = io.sockets.adapter as unknown as { serverSideEmit(packet: unknown[]): Promise<void> | void };
    return new Promise<Answer[]>((resolve) => {
      const ack = (error: Error | null, answers: Answer[]) => {
        if (error) log.warn({ event, err: error }, 'a relay node did not answer in time');
        resolve(answers ?? []);
      };
      Promise.resolve(adapter.serverSideEmit([event, arg, ack])).catch((error: unknown) => {
        log.error({ event, err: error }, 'could not reach the other relay nodes');
        resolve([]);
      });
    });
  }

  /** Hands a recipient's message to the node holding the transfer; resolves with its sender and size. */
  async function forwardLeg(leg: LegMessage): Promise<{ from: string; chunkCount: number }> {
    const result = (await clusterRequest('sft:leg', leg)).find((answer) => answer !== null);
    if (!result) throw new SftError('UNKNOWN_TRANSFER', 'No such transfer.');
    if (!result.ok) throw new SftError(result.error.code, result.error.message);
    return { from: result.from, chunkCount: result.chunkCount };
  }

  function endLeg(transferId: string, peerId: string): void {
    const leg = remoteLegs.get(legKey(transferId, peerId));
    if (leg) leg.live = false;
  }

  function rememberLeg(key: string, leg: RemoteLeg): void {
    remoteLegs.delete(key);
    remoteLegs.set(key, leg);
    if (remoteLegs.size <= RECENTLY_ENDED) return;
    // Past the bound, the oldest leg that has ended goes (a live one only if none has).
    let oldest: string | undefined;
    for (const [k, l] of remoteLegs) {
      if (!l.live) {
        oldest = k;
        break;
      }
    }
    remoteLegs.delete(oldest ?? remoteLegs.keys().next().value!);
  }

  function legsOf(peerId: string): number {
    let n = 0;
    for (const leg of remoteLegs.values()) if (leg.live && leg.peerId === peerId) n += 1;
    return n;
  }

  /** A transfer id live on another node is taken; one that ended there may be resumed here. */
  async function lookUp(transferId: string): Promise<EndedEntry | undefined> {
    const found = await clusterRequest('sft:lookup', transferId);
    if (found.some((f) => f.live)) throw new SftError('DUPLICATE_TRANSFER', 'That transfer id is already in use.');
    return found.flatMap((f) => (f.ended ? [f.ended] : [])).sort((a, b) => b.at - a.at)[0];
  }

  io.sockets.on('sft:lookup', (transferId, reply) => {
    const entry = ended.get(transferId);
    reply({ live: transfers.has(transferId), ...(entry && !entry.moved ? { ended: entry } : {}) });
  });
  io.sockets.on('sft:resumed', (transferId) => {
    // Kept (marked), so that acknowledgements still in flight for it are dropped quietly.
    const entry = ended.get(transferId);
    if (entry && !transfers.has(transferId)) entry.moved = true;
  });
  io.sockets.on('sft:leg', (leg, reply) => {
    const transfer = transfers.get(leg.message.transferId);
    // A recipient on another node calling off a transfer that waits here to be resumed.
    if (!transfer && leg.kind === 'cancel' && waitsHere(leg.message.transferId, leg.peerId)) {
      const entry = ended.get(leg.message.transferId)!;
      cancelInterrupted(leg.peerId, leg.message);
      return reply({ ok: true, from: entry.from, chunkCount: entry.chunkCount });
    }
    // A recipient's own leg, live or (for a cancel) waiting for a later round of this transfer.
    if (!transfer || !(transfer.recipients.has(leg.peerId) || (leg.kind === 'cancel' && transfer.interrupted.has(leg.peerId)))) return reply(null);
    try {
      if (leg.kind === 'answer') answerLeg(leg.peerId, leg.message);
      else if (leg.kind === 'done') doneLeg(leg.peerId, leg.message);
      else cancelLeg(leg.peerId, leg.message);
      reply({ ok: true, from: transfer.from, chunkCount: transfer.layout.chunkCount });
    } catch (error) {
      const e = toSftError(error);
      reply({ ok: false, error: errorMessage(e.code, e.code === 'INTERNAL' ? 'The relay could not handle that message.' : e.message) });
    }
  });
  io.sockets.on('sft:ack', (ack) => {
    if (!transfers.has(ack.transferId)) return; // Another node's, or ended here: dropped quietly.
    try {
      ackLeg(ack.peerId, ack);
    } catch (error) {
      const e = toSftError(error);
      io.to(roomOf(ack.peerId)).emit('relay.error', errorMessage(e.code, e.message, ack.transferId));
    }
  });
  io.sockets.on('sft:fail', (failure) => {
    const transfer = transfers.get(failure.transferId);
    if (transfer?.recipients.has(failure.peerId)) abort(transfer, failure.peerId, new SftError(failure.code, failure.message));
  });
  io.sockets.on('sft:pendingCancel', ({ peerIds, message }) => keepForAbsent(peerIds, message));
  io.sockets.on('sft:gone', (peerId, reply) => {
    peerGone(peerId);
    reply?.(true); // Sent without a reply by a node whose peer disconnected.
  });
  // Liveness: a node that dies without a word cannot say that its peers left; the others notice
  // its silence and say it for it, each to its own peers.
  const heartbeatMs = options.clusterHeartbeatMs ?? 5000;
  const nodes = new Map<string, { at: number; peers: string[] }>();
  let heartbeat: NodeJS.Timeout | undefined;
  const localPeers = () => [...(io.sockets.adapter.rooms.get(JOINED) ?? [])].flatMap((id) => io.sockets.sockets.get(id)?.data.peer?.peerId ?? []);
  io.sockets.on('sft:alive', ({ relayId: node, peers }) => {
    if (peers === null) nodes.delete(node);
    else nodes.set(node, { at: Date.now(), peers });
  });
  async function beat(): Promise<void> {
    io.serverSideEmit('sft:alive', { relayId, peers: localPeers() });
    for (const [node, { at, peers }] of nodes) {
      if (Date.now() - at < 3 * heartbeatMs) continue;
      nodes.delete(node);
      if (peers.length === 0) continue; // (An empty room list would mean every socket.)
      log.warn({ node, peers: peers.length }, 'a relay node went silent; its peers are taken as gone');
      const back = new Set((await io.in(peers.map(roomOf)).fetchSockets()).flatMap((s) => s.data.peer?.peerId ?? []));
      for (const peerId of peers.filter((id) => !back.has(id))) {
        peerGone(peerId);
        io.local.to(JOINED).emit('peer.left', { peerId });
      }
    }
  }

  io.sockets.on('sft:replace', (socketIds, reply) => {
    for (const id of socketIds) {
      const socket = io.sockets.sockets.get(id);
      if (socket) replace(socket);
    }
    reply(true);
  });

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
      if (options.redis) {
        const link = await connectCluster(options.redis, log);
        cluster = link;
        io.adapter(link.adapter as Parameters<typeof io.adapter>[0]);
        log.info({ relayId }, 'joined the relay cluster through redis');
        heartbeat = setInterval(() => void beat().catch((error: unknown) => log.error({ err: error }, 'cluster heartbeat failed')), heartbeatMs);
        heartbeat.unref();
        void beat(); // At once, so the others know this node before its first interval ends.
      }
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
      // Only this node's peers: the others stay where they are.
      io.local.to(JOINED).emit(
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
      clearInterval(heartbeat);
      clearInterval(expiry);
      if (cluster) io.serverSideEmit('sft:alive', { relayId, peers: null });
      await cluster?.close();
      transfers.clear();
    },
    async reload(update) {
      if (update.tokens) tokens = hashTokens(update.tokens);
      if (update.allowList !== undefined) allowList = update.allowList;
      const list = allowList;
      if (!list) return;
      // Each node applies its own list to its own peers (in a cluster, reload every node).
      for (const s of await io.local.in(JOINED).fetchSockets()) {
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

