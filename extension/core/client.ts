/**
 * The relay client: one authenticated Socket.IO connection to a relay, presence, and the routing of
 * transfer messages to the transfers they belong to. Every message from the relay is validated
 * with the protocol's schemas, because the relay is not trusted with anything but delivery.
 */
import { EventEmitter } from 'node:events';
import { io, type Socket } from 'socket.io-client';
import { RelayTransport } from './transport';
import { SftError, isErrorCode, type ErrorCode } from './errors';
import {
  CLIENT_CANCEL_CODES,
  ChallengeSchema,
  ForwardedAckSchema,
  ForwardedAnswerSchema,
  ForwardedCancelSchema,
  ForwardedDoneSchema,
  OfferSchema,
  PROTOCOL_VERSION,
  PeerInfoSchema,
  PeerLeftSchema,
  PeerListSchema,
  ErrorSchema,
  SOCKET_PATH,
  DEFAULT_RESUME_GRACE_MS,
  isChunk,
  parse,
  peerIdentity,
  peerInfo,
  type AckMessage,
  type AnswerMessage,
  type ChallengeMessage,
  type ClientCancelCode,
  type ClientToRelayEvents,
  type ErrorMessage,
  type Forwarded,
  type OfferMessage,
  type PeerInfo,
  type RelayToClientEvents,
  type Result,
  type DoneMessage,
} from './protocol';
import { originOf, proveJoin } from './crypto/envelope';
import { peerIdOf, type Identity } from './crypto/identity';

export interface RelayClientOptions {
  readonly url: string;
  readonly identity: Identity;
  readonly name: string;
  readonly token?: string;
  /** PEM certificate(s) to trust for wss:// relays with a private CA. */
  readonly ca?: string;
  /** Reconnect automatically after a dropped connection (default true). */
  readonly reconnect?: boolean;
  readonly connectTimeoutMs?: number;
}

export type ConnectionState = 'disconnected' | 'connecting' | 'connected';

/** Messages that belong to one transfer, delivered to the transfer that registered for them. */
export interface TransferListener {
  answer?(message: Forwarded<AnswerMessage>): void;
  chunk?(index: number, data: Buffer): void;
  ack?(message: Forwarded<AckMessage>): void;
  done?(message: Forwarded<DoneMessage>): void;
  cancel?(code: ErrorCode, message: string, from: string | undefined): void;
  /** The connection dropped; the transfer cannot continue on this connection. */
  disconnected?(): void;
}

/** How many cancels for not-yet-registered transfers are kept, and for how long. */
const UNCLAIMED_CANCELS = 100;
const UNCLAIMED_CANCEL_MS = 30_000;

interface RelayClientEvents {
  state: [ConnectionState];
  peers: [ReadonlyMap<string, PeerInfo>];
  offer: [OfferMessage];
  /** Something the relay said that a UI may want to show (refusals, shutdown notices). */
  notice: [ErrorMessage];
  /** A message from the relay that failed validation and was dropped. */
  warning: [SftError];
}

type ClientSocket = Socket<RelayToClientEvents, ClientToRelayEvents>;

export class RelayClient extends EventEmitter<RelayClientEvents> {
  private readonly socket: ClientSocket;
  private readonly peerMap = new Map<string, PeerInfo>();
  private readonly transfers = new Map<string, TransferListener>();
  /** Cancels that came for a transfer no listener had registered yet, with when (bounded). */
  private readonly unclaimedCancels = new Map<string, { code: ErrorCode; message: string; from?: string; at: number }>();
  private readonly pending = new Set<Promise<void>>();
  private joining = false;
  private challenge: ChallengeMessage | undefined;
  private stateValue: ConnectionState = 'disconnected';
  private firstJoin: { resolve: () => void; reject: (error: SftError) => void } | undefined;

  constructor(private readonly options: RelayClientOptions) {
    super();
    this.socket = io(options.url, {
      path: SOCKET_PATH,
      transports: [RelayTransport],
      autoConnect: false,
      reconnection: options.reconnect ?? true,
      reconnectionDelay: 500,
      reconnectionDelayMax: 10_000,
      randomizationFactor: 0.5,
      timeout: options.connectTimeoutMs ?? 10_000,
      auth: { v: PROTOCOL_VERSION, ...(options.token ? { token: options.token } : {}) },
      ...(options.ca ? { ca: options.ca } : {}),
    }) as ClientSocket;
    this.wire();
  }

  get identity(): Identity {
    return this.options.identity;
  }

  get name(): string {
    return this.options.name;
  }

  get state(): ConnectionState {
    return this.stateValue;
  }

  get peers(): ReadonlyMap<string, PeerInfo> {
    return this.peerMap;
  }

  /** Limits the relay announced in its challenge (window, chunk size, file size). */
  get relayLimits(): ChallengeMessage | undefined {
    return this.challenge;
  }
  /** How long this relay lets an interrupted transfer be resumed. */
  get resumeGraceMs(): number {
    return this.relayLimits?.resumeGraceMs ?? DEFAULT_RESUME_GRACE_MS;
  }


  /** Connects and joins; rejects with the relay's reason (UNAUTHORIZED, BAD_PROOF, …) on refusal. */
  connect(): Promise<void> {
    if (this.stateValue === 'connected') return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.firstJoin = { resolve, reject };
      this.setState('connecting');
      this.socket.connect();
    });
  }

  close(): void {
    this.firstJoin?.reject(new SftError('CANCELLED', 'The connection was closed.'));
    this.firstJoin = undefined;
    this.socket.disconnect();
    this.onDisconnected();
  }

  /** Resolves a display name or a peer id (or an unambiguous prefix of one) to an online peer. */
  findPeer(nameOrId: string): PeerInfo {
    const exact = this.peerMap.get(nameOrId);
    if (exact) return exact;
    const wanted = nameOrId.toLowerCase();
    const matches = [...this.peerMap.values()].filter((p) => p.name.toLowerCase() === wanted || (wanted.length >= 6 && p.peerId.startsWith(wanted)));
    if (matches.length === 1) return matches[0]!;
    if (matches.length > 1) throw new SftError('USAGE', `"${nameOrId}" matches ${matches.length} online peers; use a peer id.`);
    throw new SftError('PEER_OFFLINE', `No online peer is called "${nameOrId}".`);
  }

  // ---- Transfer plumbing, used by the transfer engine ----

  register(transferId: string, listener: TransferListener): () => void {
    this.transfers.set(transferId, listener);
    const unclaimed = this.unclaimedCancels.get(transferId);
    if (unclaimed) {
      this.unclaimedCancels.delete(transferId);
      if (Date.now() - unclaimed.at <= UNCLAIMED_CANCEL_MS) {
        // After the caller has its unregister function, as for a cancel arriving a moment later.
        queueMicrotask(() => {
          if (this.transfers.get(transferId) === listener) listener.cancel?.(unclaimed.code, unclaimed.message, unclaimed.from);
        });
      }
    }
    return () => {
      if (this.transfers.get(transferId) === listener) this.transfers.delete(transferId);
    };
  }

  async offer(message: OfferMessage): Promise<void> {
    this.requireConnected();
    const result = (await this.socket.timeout(30_000).emitWithAck('offer', message).catch(() => ({
      ok: false as const,
      error: this.socket.connected
        ? { code: 'TIMEOUT' as const, message: 'The relay did not answer the offer.' }
        : { code: 'PEER_GONE' as const, message: 'The connection dropped before the relay answered the offer.' },
    }))) as Result;
    if (!result.ok) throw relayError(result.error);
  }

  /** Resolves once the relay has handled the answer; rejects with its refusal. */
  answer(transferId: string, accept: boolean, resumeFrom?: number): Promise<void> {
    return this.acknowledged('answer', { transferId, accept, ...(resumeFrom !== undefined ? { resumeFrom } : {}) });
  }

  /** Resolves when the client is joined again (now, or after a reconnection), false after `timeoutMs`. */
  whenConnected(timeoutMs: number): Promise<boolean> {
    // A disconnection ends the wait only when Socket.IO has given up reconnecting.
    return this.waitUntil(() => (this.stateValue === 'connected' ? true : this.stateValue === 'disconnected' && !this.socket.active ? false : undefined), timeoutMs);
  }

  /**
   * Resolves true once the relay lists `peerId` as online (now, or when it joins), false after
   * `timeoutMs` or when this client disconnects meanwhile.
   */
  whenPeerOnline(peerId: string, timeoutMs: number): Promise<boolean> {
    return this.waitUntil(() => (this.stateValue !== 'connected' ? false : this.peerMap.has(peerId) ? true : undefined), timeoutMs);
  }

  /**
   * Resolves true as soon as `check()` does (now or after a state or presence change), false when
   * a change makes it return false or after `timeoutMs`. `undefined` means "keep waiting".
   */
  private waitUntil(check: () => boolean | undefined, timeoutMs: number): Promise<boolean> {
    if (check() === true) return Promise.resolve(true);
    return new Promise((resolve) => {
      const finish = (result: boolean) => {
        clearTimeout(timer);
        this.off('peers', onChange);
        this.off('state', onChange);
        resolve(result);
      };
      const onChange = () => {
        const result = check();
        if (result !== undefined) finish(result);
      };
      const timer = setTimeout(() => finish(false), Math.max(0, timeoutMs));
      this.on('peers', onChange);
      this.on('state', onChange);
    });
  }

  sendChunk(transferId: string, index: number, data: Buffer): void {
    this.requireConnected();
    this.socket.emit('chunk', transferId, index, data);
  }

  ack(transferId: string, index: number): void {
    // Only on a joined connection: Socket.IO would otherwise buffer it and send it on reconnection,
    // before the new join, where it is stale anyway (a resumed transfer restates its position).
    if (this.stateValue === 'connected') this.socket.emit('ack', { transferId, index });
  }

  done(transferId: string, receipt: Buffer): Promise<void> {
    return this.acknowledged('done', { transferId, receipt: receipt.toString('base64url') });
  }

  cancel(transferId: string, code: ErrorCode, message?: string): void {
    // Codes only the relay may give (PEER_GONE, …) are reported to it as a plain cancellation.
    const reported = (CLIENT_CANCEL_CODES as readonly ErrorCode[]).includes(code) ? (code as ClientCancelCode) : 'CANCELLED';
    if (this.stateValue === 'connected') {
      this.acknowledged('cancel', { transferId, code: reported, ...(message ? { message: message.slice(0, 500) } : {}) }).catch(() => undefined);
    }
  }

  /** Waits (up to `timeoutMs`) for the relay to acknowledge what was sent, then closes. */
  async closeGracefully(timeoutMs = 5000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    await Promise.race([Promise.allSettled([...this.pending]), timeout]);
    clearTimeout(timer);
    this.close();
  }

  /** Sends a message the relay acknowledges, and keeps it pending until it has. */
  private acknowledged<E extends 'answer' | 'done' | 'cancel'>(event: E, message: Parameters<ClientToRelayEvents[E]>[0]): Promise<void> {
    if (this.stateValue !== 'connected') return Promise.reject(new SftError('PEER_GONE', 'Not connected to the relay.'));
    const sent = (async () => {
      let result: Result;
      try {
        result = (await (this.socket.timeout(30_000) as unknown as ClientSocket).emitWithAck(event as 'answer', message as AnswerMessage)) as Result;
      } catch {
        throw new SftError('TIMEOUT', 'The relay did not acknowledge a message.');
      }
      if (!result.ok) throw relayError(result.error);
    })();
    this.pending.add(sent);
    const forget = () => this.pending.delete(sent);
    sent.then(forget, forget);
    return sent;
  }

  private requireConnected(): void {
    if (!this.socket.connected || this.stateValue !== 'connected') throw new SftError('PEER_GONE', 'Not connected to the relay.');
  }

  private setState(state: ConnectionState): void {
    if (state === this.stateValue) return;
    this.stateValue = state;
    this.emit('state', state);
  }

  /** Runs a handler on a relay message, dropping (and reporting) any message that fails validation. */
  private checked<A extends unknown[]>(handler: (...args: A) => void) {
    return (...args: A) => {
      try {
        handler(...args);
      } catch (error) {
        this.emit('warning', error instanceof SftError ? error : new SftError('BAD_MESSAGE', 'The relay sent a message that could not be handled.', error));
      }
    };
  }

  private wire(): void {
    const s = this.socket;
    s.on('challenge', this.checked((raw: unknown) => {
      this.challenge = parse(ChallengeSchema, raw, 'challenge');
      void this.join(this.challenge);
    }));
    s.on('connect_error', (error: Error & { data?: unknown }) => {
      const data = ErrorSchema.safeParse(error.data);
      const refusal = data.success ? relayError(data.data) : undefined;
      // A refusal by policy will not change by retrying; a network error might.
      if (refusal && this.firstJoin) {
        this.firstJoin.reject(refusal);
        this.firstJoin = undefined;
        s.disconnect();
        this.setState('disconnected');
      } else if (refusal) {
        this.emit('notice', refusal.toJSON());
        // After a refusal Socket.IO stops retrying. Busy or restarting relays are worth another
        // try (with jitter, so a crowd does not return at once); other refusals are final.
        if (this.options.reconnect !== false && (refusal.code === 'JOIN_RATE_LIMITED' || refusal.code === 'SHUTTING_DOWN')) {
          setTimeout(() => this.socket.connect(), 1000 + Math.random() * 4000).unref?.();
        } else {
          this.setState('disconnected');
        }
      } else if (this.firstJoin) {
        // The first attempt failed on the network: tell the caller now; with reconnect on, the
        // client keeps trying in the background and joins when the relay comes back.
        this.firstJoin.reject(new SftError('RELAY_UNREACHABLE', `Could not reach the relay at ${this.options.url}.`, error));
        this.firstJoin = undefined;
        this.setState(s.active ? 'connecting' : 'disconnected');
      }
    });
    s.on('disconnect', () => this.onDisconnected());
    s.io.on('reconnect_attempt', () => this.setState('connecting'));
    s.on('peer.joined', this.checked((raw: unknown) => {
      const peer = checkPeer(parse(PeerInfoSchema, raw, 'peer.joined'));
      this.peerMap.set(peer.peerId, peer);
      this.emit('peers', this.peerMap);
    }));
    s.on('peer.left', this.checked((raw: unknown) => {
      const { peerId } = parse(PeerLeftSchema, raw, 'peer.left');
      if (this.peerMap.delete(peerId)) this.emit('peers', this.peerMap);
    }));
    s.on('offer', this.checked((raw: unknown) => this.emit('offer', parse(OfferSchema, raw, 'offer'))));
    s.on('answer', this.checked((raw: unknown) => {
      const m = parse(ForwardedAnswerSchema, raw, 'answer');
      this.transfers.get(m.transferId)?.answer?.(m);
    }));
    s.on('chunk', this.checked((transferId: unknown, index: unknown, data: unknown) => {
      if (!isChunk(transferId, index, data)) throw new SftError('BAD_MESSAGE', 'Malformed chunk from the relay.');
      this.transfers.get(transferId as string)?.chunk?.(index as number, data);
    }));
    s.on('ack', this.checked((raw: unknown) => {
      const m = parse(ForwardedAckSchema, raw, 'ack');
      this.transfers.get(m.transferId)?.ack?.(m);
    }));
    s.on('done', this.checked((raw: unknown) => {
      const m = parse(ForwardedDoneSchema, raw, 'done');
      this.transfers.get(m.transferId)?.done?.(m);
    }));
    s.on('cancel', this.checked((raw: unknown) => {
      const m = parse(ForwardedCancelSchema, raw, 'cancel');
      const listener = this.transfers.get(m.transferId);
      if (listener) return listener.cancel?.(m.code, m.message ?? 'Cancelled.', m.from);
      // Nobody has registered this transfer yet (an Inbox still reading its journal after a
      // restart): kept briefly for the listener that registers it.
      this.unclaimedCancels.delete(m.transferId);
      this.unclaimedCancels.set(m.transferId, { code: m.code, message: m.message ?? 'Cancelled.', ...(m.from ? { from: m.from } : {}), at: Date.now() });
      if (this.unclaimedCancels.size > UNCLAIMED_CANCELS) this.unclaimedCancels.delete(this.unclaimedCancels.keys().next().value!);
    }));
    s.on('relay.error', this.checked((raw: unknown) => {
      const m = parse(ErrorSchema, raw, 'relay.error');
      if (m.transferId && this.transfers.has(m.transferId)) this.transfers.get(m.transferId)?.cancel?.(m.code, m.message, undefined);
      else this.emit('notice', m);
    }));
  }

  private async join(challenge: ChallengeMessage): Promise<void> {
    this.joining = true;
    try {
      await this.joinOnce(challenge);
    } finally {
      this.joining = false;
    }
  }

  private async joinOnce(challenge: ChallengeMessage): Promise<void> {
    const { identity, name } = this.options;
    if (challenge.v !== PROTOCOL_VERSION) {
      this.failJoin(new SftError('PROTOCOL_VERSION', `The relay speaks protocol ${challenge.v}; this client speaks ${PROTOCOL_VERSION}.`));
      return;
    }
    const origin = originOf(this.options.url);
    const proof = proveJoin(identity, Buffer.from(challenge.nonce, 'base64url'), challenge.relayId, origin);
    let result: Result<{ peers: PeerInfo[] }>;
    try {
      result = (await this.socket.timeout(15_000).emitWithAck('hello', { ...peerInfo(identity, name), origin, proof: proof.toString('base64url') })) as Result<{ peers: PeerInfo[] }>;
    } catch {
      const gone = !this.socket.connected;
      const error = gone ? new SftError('PEER_GONE', 'The relay closed the connection before this client could join.') : new SftError('TIMEOUT', 'The relay did not answer the join request.');
      // Joining again after a drop: a join that did not get through is retried as the connection
      // is (failJoin would stop Socket.IO reconnecting for good). Unanswered, the connection is
      // closed so that the next attempt starts afresh. Only a first connect() reports it.
      if (!this.firstJoin && this.options.reconnect !== false) {
        this.emit('notice', error.toJSON());
        if (!gone) this.socket.io.engine?.close();
        return;
      }
      this.failJoin(error);
      return;
    }
    if (!result.ok) {
      this.failJoin(relayError(result.error));
      return;
    }
    let peers: PeerInfo[];
    try {
      peers = parse(PeerListSchema, result.peers, 'peer list');
    } catch (error) {
      this.failJoin(error as SftError);
      return;
    }
    // Merged, not replaced: announcements may arrive before this reply (the map was cleared when
    // the previous connection dropped).
    for (const peer of peers) {
      if (peer.peerId === identity.peerId) continue;
      try {
        this.peerMap.set(peer.peerId, checkPeer(peer));
      } catch (error) {
        this.emit('warning', error as SftError);
      }
    }
    this.setState('connected');
    this.emit('peers', this.peerMap);
    this.firstJoin?.resolve();
    this.firstJoin = undefined;
  }

  private failJoin(error: SftError): void {
    this.socket.disconnect();
    this.setState('disconnected');
    if (this.firstJoin) this.firstJoin.reject(error);
    else this.emit('notice', error.toJSON());
    this.firstJoin = undefined;
  }

  private onDisconnected(): void {
    // While a join is under way its own outcome (the relay's reason, say) settles connect().
    if (this.firstJoin && !this.socket.active && !this.joining) {
      this.firstJoin.reject(new SftError('PEER_GONE', 'The relay closed the connection before this client could join.'));
      this.firstJoin = undefined;
    }
    this.setState(this.socket.active ? 'connecting' : 'disconnected');
    if (this.peerMap.size > 0) {
      this.peerMap.clear();
      this.emit('peers', this.peerMap);
    }
    for (const listener of [...this.transfers.values()]) listener.disconnected?.();
  }
}

/**
 * A peer id is the hash of the peer's keys; a listing where they disagree is a relay trying to
 * pass one identity's keys off under another's id, so the peer is dropped, never shown.
 */
function checkPeer(peer: PeerInfo): PeerInfo {
  const keys = peerIdentity(peer);
  if (peerIdOf(keys.signPublicKey, keys.agreePublicKey) !== peer.peerId) {
    throw new SftError('BAD_SIGNATURE', `The relay listed a peer whose id does not match its keys (${peer.peerId}).`);
  }
  return peer;
}

function relayError(error: ErrorMessage): SftError {
  return new SftError(isErrorCode(error.code) ? error.code : 'INTERNAL', error.message);
}
