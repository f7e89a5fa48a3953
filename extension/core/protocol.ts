/**
 * The wire protocol between clients and the relay: one module, imported by both ends, so the
 * compiler checks every emit and one set of schemas validates every message at runtime (the relay
 * validates what clients send; clients validate what a possibly hostile relay sends).
 *
 * Binary key material travels as base64url strings in control messages; only chunk payloads
 * travel as binary attachments. See docs/PROTOCOL.md for the full description.
 */
import { z } from 'zod';
import { ErrorCodes, SftError, type ErrorCode } from './errors';
import type { SealedOffer } from './crypto/envelope';
import { PEER_ID_PATTERN, type PublicIdentity } from './crypto/identity';
import { MAX_CHUNK_SIZE, MIN_CHUNK_SIZE } from './crypto/stream';

export const PROTOCOL_VERSION = 1;

/** Socket.IO path of the relay; both ends must agree. */
export const SOCKET_PATH = '/sft/socket.io';

/** How long a relay lets an interrupted transfer be resumed unless it says otherwise (challenge). */
export const DEFAULT_RESUME_GRACE_MS = 60_000;

export const MAX_NAME_LENGTH = 64;
export const MAX_RECIPIENTS = 32;
export const MAX_HEADER_BYTES = 1024 * 1024;
/** Largest encoded message: a full chunk, or a full header, plus framing. */
export const MAX_MESSAGE_BYTES = Math.max(MAX_CHUNK_SIZE, MAX_HEADER_BYTES) * 2;

// ---- Field schemas ----

const b64url = (bytes: number) => z.string().length(Math.ceil((bytes * 4) / 3)).regex(/^[A-Za-z0-9_-]+$/);
const peerId = z.string().regex(PEER_ID_PATTERN);
const transferId = z.string().regex(/^[A-Za-z0-9_-]{22}$/);
const count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const displayName = z.string().trim().min(1).max(MAX_NAME_LENGTH);
const errorCode = z.enum(ErrorCodes);
/** Sentences travel between peers; no control or direction characters may ride along into a terminal. */
const humanMessage = z.string().max(500).regex(/^[^\p{Cc}\p{Bidi_Control}]*$/u);

export const PeerInfoSchema = z.object({
  peerId,
  name: displayName,
  signPublicKey: b64url(32),
  agreePublicKey: b64url(32),
});
export type PeerInfo = z.infer<typeof PeerInfoSchema>;

export const ChallengeSchema = z.object({
  v: z.number().int(),
  relayId: z.string().min(1).max(128),
  nonce: b64url(32),
  /** Chunks a sender may have in flight beyond the slowest recipient's acknowledgement. */
  window: z.number().int().min(1).max(1024),
  maxChunkSize: z.number().int().min(MIN_CHUNK_SIZE).max(MAX_CHUNK_SIZE),
  maxFileSize: count.nullable(),
  /** How long the relay lets an interrupted transfer be resumed. */
  resumeGraceMs: count.optional(),
});
export type ChallengeMessage = z.infer<typeof ChallengeSchema>;

export const HelloSchema = PeerInfoSchema.extend({ origin: z.string().min(1).max(300), proof: b64url(64) });
export type HelloMessage = z.infer<typeof HelloSchema>;

const StanzaSchema = z.object({ to: peerId, ephemeral: b64url(32), wrappedKey: b64url(48) });

export const OfferSchema = z.object({
  transferId,
  sender: PeerInfoSchema.omit({ name: true }),
  createdAt: count,
  chunkSize: z.number().int().min(MIN_CHUNK_SIZE).max(MAX_CHUNK_SIZE),
  chunkCount: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  cipherBytes: count,
  stanzas: z.array(StanzaSchema).min(1).max(MAX_RECIPIENTS),
  header: z.string().max(Math.ceil((MAX_HEADER_BYTES * 4) / 3)).regex(/^[A-Za-z0-9_-]+$/),
  signature: b64url(64),
  /**
   * Set when a sender offers again, after a dropped connection, a transfer it had started: the
   * resume attempt (1, 2, …), which selects the payload key for the chunks that follow.
   */
  resume: z.number().int().min(1).max(1_000_000).optional(),
  /**
   * On a resume, the recipients whose legs it continues, when not all of them (the others were
   * delivered, or ended for good). Not signed, like `resume`: it only routes. The relay checks that
   * each was cut off by a dropped connection (docs/PROTOCOL.md §7.6).
   */
  resumeTo: z.array(peerId).min(1).max(MAX_RECIPIENTS).optional(),
});
export type OfferMessage = z.infer<typeof OfferSchema>;

/** `resumeFrom`: the number of chunks the recipient has already verified and kept (on a resume). */
export const AnswerSchema = z.object({ transferId, accept: z.boolean(), resumeFrom: count.optional() });
export type AnswerMessage = z.infer<typeof AnswerSchema>;

export const AckSchema = z.object({ transferId, index: count });
export type AckMessage = z.infer<typeof AckSchema>;

export const TransferRefSchema = z.object({ transferId });

/** The outcomes a client may report when it ends a transfer; relay-only codes are not among them. */
export const CLIENT_CANCEL_CODES = [
  'CANCELLED',
  'DECLINED',
  'TIMEOUT',
  'NO_SPACE',
  'IO',
  'FILE_EXISTS',
  'SOURCE_CHANGED',
  'INTEGRITY',
  'DECRYPT_FAILED',
  'BAD_SIGNATURE',
  'NOT_FOR_ME',
  'UNSAFE_NAME',
  'REPLAYED_OFFER',
  'BAD_MESSAGE',
  'INTERNAL',
] as const satisfies readonly ErrorCode[];

export const CancelSchema = z.object({ transferId, code: z.enum(CLIENT_CANCEL_CODES), message: humanMessage.optional() });
export type CancelMessage = z.infer<typeof CancelSchema>;
export type ClientCancelCode = (typeof CLIENT_CANCEL_CODES)[number];

/** Outcomes that interrupt a transfer rather than end it: a dropped connection, a relay restart. */
export const RESUMABLE_CODES: readonly ErrorCode[] = ['PEER_GONE', 'SHUTTING_DOWN'];

export const ErrorSchema = z.object({ code: errorCode, message: humanMessage, transferId: transferId.optional() });
export type ErrorMessage = z.infer<typeof ErrorSchema>;

/** What the relay adds when it forwards a message: who sent it (authenticated at join). */
const fromPeer = z.object({ from: peerId });
export const ForwardedAnswerSchema = AnswerSchema.extend(fromPeer.shape);
export const ForwardedAckSchema = AckSchema.extend(fromPeer.shape);
/** `done`: the recipient's signed receipt (envelope.ts signReceipt) travels with it to the sender. */
export const DoneSchema = TransferRefSchema.extend({ receipt: b64url(64) });
export type DoneMessage = z.infer<typeof DoneSchema>;
export const ForwardedDoneSchema = DoneSchema.extend(fromPeer.shape);
/** Forwarded cancels also carry the relay's own outcomes (PEER_GONE, OUT_OF_ORDER, …). */
export const ForwardedCancelSchema = CancelSchema.extend({ code: errorCode, from: peerId.optional() });
export const PeerLeftSchema = z.object({ peerId });
export const PeerListSchema = z.array(PeerInfoSchema).max(100_000);

export type Forwarded<T> = T & { from: string };

export type Result<T extends object = object> = ({ ok: true } & T) | { ok: false; error: ErrorMessage };
export type Reply<T extends object = object> = (result: Result<T>) => void;

export interface ClientToRelayEvents {
  hello: (message: HelloMessage, reply: Reply<{ peers: PeerInfo[] }>) => void;
  offer: (message: OfferMessage, reply: Reply) => void;
  answer: (message: AnswerMessage, reply?: Reply) => void;
  chunk: (transferId: string, index: number, data: Buffer) => void;
  ack: (message: AckMessage) => void;
  done: (message: DoneMessage, reply?: Reply) => void;
  cancel: (message: CancelMessage, reply?: Reply) => void;
}

export interface RelayToClientEvents {
  challenge: (message: ChallengeMessage) => void;
  'peer.joined': (peer: PeerInfo) => void;
  'peer.left': (message: { peerId: string }) => void;
  offer: (message: OfferMessage) => void;
  answer: (message: Forwarded<AnswerMessage>) => void;
  chunk: (transferId: string, index: number, data: Buffer) => void;
  ack: (message: Forwarded<AckMessage>) => void;
  done: (message: Forwarded<DoneMessage>) => void;
  cancel: (message: Omit<CancelMessage, 'code'> & { code: ErrorCode; from?: string }) => void;
  'relay.error': (message: ErrorMessage) => void;
}

/** Handshake `auth` payload (Socket.IO's connection-time data). */
export const HandshakeSchema = z.object({ v: z.number().int(), token: z.string().max(512).optional() });
export type HandshakeAuth = z.infer<typeof HandshakeSchema>;

/** Validates one message; throws BAD_MESSAGE naming the first bad field (never echoing values). */
export function parse<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const where = issue && issue.path.length > 0 ? ` (field ${issue.path.join('.')})` : '';
  throw new SftError('BAD_MESSAGE', `Malformed ${what}${where}.`, result.error.issues);
}

export function isChunk(transferIdValue: unknown, index: unknown, data: unknown): data is Buffer {
  return (
    typeof transferIdValue === 'string' &&
    transferId.safeParse(transferIdValue).success &&
    typeof index === 'number' &&
    Number.isSafeInteger(index) &&
    index >= 0 &&
    Buffer.isBuffer(data)
  );
}

export function errorMessage(code: ErrorCode, message: string, transferIdValue?: string): ErrorMessage {
  return transferIdValue ? { code, message, transferId: transferIdValue } : { code, message };
}

// ---- Conversions between the crypto layer's Buffers and the wire's strings ----

const b = (s: string) => Buffer.from(s, 'base64url');

export function peerIdentity(peer: Pick<PeerInfo, 'peerId' | 'signPublicKey' | 'agreePublicKey'>): PublicIdentity {
  return { peerId: peer.peerId, signPublicKey: b(peer.signPublicKey), agreePublicKey: b(peer.agreePublicKey) };
}

export function peerInfo(identity: PublicIdentity, name: string): PeerInfo {
  return {
    peerId: identity.peerId,
    name,
    signPublicKey: identity.signPublicKey.toString('base64url'),
    agreePublicKey: identity.agreePublicKey.toString('base64url'),
  };
}

export function offerToWire(offer: SealedOffer): OfferMessage {
  const { name: _name, ...sender } = peerInfo(offer.sender, '-');
  return {
    transferId: offer.transferId,
    sender,
    createdAt: offer.createdAt,
    chunkSize: offer.chunkSize,
    chunkCount: offer.chunkCount,
    cipherBytes: offer.cipherBytes,
    stanzas: offer.stanzas.map((s) => ({ to: s.to, ephemeral: s.ephemeral.toString('base64url'), wrappedKey: s.wrappedKey.toString('base64url') })),
    header: offer.header.toString('base64url'),
    signature: offer.signature.toString('base64url'),
  };
}

export function offerFromWire(message: OfferMessage): SealedOffer {
  return {
    transferId: message.transferId,
    sender: peerIdentity(message.sender),
    createdAt: message.createdAt,
    chunkSize: message.chunkSize,
    chunkCount: message.chunkCount,
    cipherBytes: message.cipherBytes,
    stanzas: message.stanzas.map((s) => ({ to: s.to, ephemeral: b(s.ephemeral), wrappedKey: b(s.wrappedKey) })),
    header: b(message.header),
    signature: b(message.signature),
  };
}
