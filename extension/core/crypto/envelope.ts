/**
 * The envelope: what a sender puts around a payload so that only the chosen recipients can read
 * it and each of them knows who sent it. Modelled on age's X25519 recipient stanzas and on HPKE's
 * authenticated mode (RFC 9180 §5.1.3), built from Node's primitives only.
 *
 *   fileKey       = 32 random bytes, fresh per transfer
 *   per recipient R, with a fresh ephemeral X25519 key E:
 *     transcript  = H(label ‖ transferId ‖ E.pub ‖ S.agreePub ‖ R.agreePub ‖ S.id ‖ R.id)
 *     wrapKey     = HKDF(X25519(E, R) ‖ X25519(S, R), salt = transcript, "sft/v1 wrap key")
 *     wrappedKey  = AES-256-GCM(wrapKey, nonce = 0, fileKey)
 *   headerKey     = HKDF(fileKey, salt = transferId, "sft/v1 header key")
 *   payloadKey    = HKDF(fileKey, salt = transferId, "sft/v1 payload key")
 *                   (resume attempt r ≥ 1: info "sft/v1 payload key resume r")
 *   header        = AES-256-GCM(headerKey, nonce = 0, JSON(names, sizes, modes))
 *   signature     = Ed25519(S.sign, offer transcript)   — over every clear field and stanza
 *
 * Why both agreements: X25519(E, R) gives forward secrecy against a later theft of S's key;
 * X25519(S, R) authenticates the sender implicitly, so only S (or R) could have made the stanza.
 * The signature then binds the whole offer, including the ciphertext sizes the relay enforces,
 * to S's identity. A zero nonce is safe: every key it is used with is used exactly once.
 */
import {
  KEY_BYTES,
  Labels,
  NONCE_BYTES,
  encodeParts,
  generateKeyPair,
  hkdf,
  open,
  randomBytes,
  seal,
  sha256,
  verify,
  x25519,
  type KeyPair,
} from './primitives';
import { peerIdOf, type Identity, type PublicIdentity } from './identity';
import { SftError } from '../errors';
import { layoutFor, type PayloadLayout } from './stream';

export const TRANSFER_ID_BYTES = 16;
const ZERO_NONCE = Buffer.alloc(NONCE_BYTES);

/** One entry of the encrypted header. Paths are relative, "/"-separated, and untrusted on receipt. */
export interface HeaderEntry {
  readonly path: string;
  readonly type: 'file' | 'dir';
  readonly size: number;
  readonly mode?: number;
  readonly mtimeMs?: number;
}

export interface TransferHeader {
  readonly v: 1;
  readonly entries: readonly HeaderEntry[];
  readonly chunkSize: number;
  readonly plainBytes: number;
}

export interface RecipientStanza {
  readonly to: string;
  readonly ephemeral: Buffer;
  readonly wrappedKey: Buffer;
}

/** The offer as it crosses the relay: every field here is visible to the relay, and signed. */
export interface SealedOffer {
  readonly transferId: string;
  readonly sender: PublicIdentity;
  readonly createdAt: number;
  readonly chunkSize: number;
  readonly chunkCount: number;
  readonly cipherBytes: number;
  readonly stanzas: readonly RecipientStanza[];
  readonly header: Buffer;
  readonly signature: Buffer;
}

export interface TransferKeys {
  readonly headerKey: Buffer;
  readonly payloadKey: Buffer;
  /**
   * The payload key for resume attempt `attempt` (0 is the first sending, `payloadKey`). Each
   * attempt re-sends from the receiver's resume point under a fresh key, so a chunk index is never
   * sealed twice under one key, even if the source changed in a way its size and time hide.
   */
  payloadKeyFor(attempt: number): Buffer;
}

export function newTransferId(): string {
  return randomBytes(TRANSFER_ID_BYTES).toString('base64url');
}

export function deriveTransferKeys(fileKey: Buffer, transferId: string): TransferKeys {
  const salt = Buffer.from(transferId, 'utf8');
  const payloadKeyFor = (attempt: number) => hkdf(fileKey, salt, attempt === 0 ? Labels.payloadKey : `${Labels.payloadResumeKey} ${attempt}`);
  return { headerKey: hkdf(fileKey, salt, Labels.headerKey), payloadKey: payloadKeyFor(0), payloadKeyFor };
}

function wrapKeyFor(transferId: string, ephemeralPublic: Buffer, sender: PublicIdentity, recipient: PublicIdentity, secret: Buffer): Buffer {
  const transcript = sha256(
    encodeParts([
      Labels.wrapTranscript,
      transferId,
      ephemeralPublic,
      sender.agreePublicKey,
      recipient.agreePublicKey,
      sender.peerId,
      recipient.peerId,
    ]),
  );
  return hkdf(secret, transcript, Labels.wrapKey);
}

function offerTranscript(offer: Omit<SealedOffer, 'signature'>): Buffer {
  const parts: Array<Buffer | string | number> = [
    Labels.offer,
    offer.transferId,
    offer.sender.peerId,
    offer.sender.signPublicKey,
    offer.sender.agreePublicKey,
    offer.createdAt,
    offer.chunkSize,
    offer.chunkCount,
    offer.cipherBytes,
    offer.header,
    offer.stanzas.length,
  ];
  for (const stanza of offer.stanzas) parts.push(stanza.to, stanza.ephemeral, stanza.wrappedKey);
  return encodeParts(parts);
}

/** Randomness the sender draws; injectable so that known-answer vectors are reproducible. */
export interface SealRandomness {
  readonly fileKey: Buffer;
  readonly ephemerals: readonly KeyPair[];
}

export interface SealOfferInput {
  readonly sender: Identity;
  readonly recipients: readonly PublicIdentity[];
  readonly transferId: string;
  readonly header: TransferHeader;
  readonly createdAt: number;
  /**
   * Also wrap the file key for the sender itself (`selfStanza`), so that a transfer journal can
   * keep it on disk without keeping it in clear (transfer/journal.ts). Not part of the offer.
   */
  readonly sealToSelf?: boolean;
}

/**
 * A stanza the sender addresses to itself: exactly the recipient stanza construction above with
 * R = S. Only the holder of S's agreement key can unwrap it, and the transcript binds it to this
 * transfer id, so it cannot be moved to another journal entry.
 */
function stanzaFor(sender: Identity, recipient: PublicIdentity, transferId: string, fileKey: Buffer, ephemeral: KeyPair): RecipientStanza {
  const secret = Buffer.concat([x25519(ephemeral.privateKey, recipient.agreePublicKey), sender.agree(recipient.agreePublicKey)]);
  const wrapKey = wrapKeyFor(transferId, ephemeral.publicKey, sender, recipient, secret);
  return { to: recipient.peerId, ephemeral: ephemeral.publicKey, wrappedKey: seal(wrapKey, ZERO_NONCE, fileKey) };
}

/**
 * Recovers the keys of one of this identity's own transfers from the stanza `sealOffer` wrapped for
 * it (`sealToSelf`). Throws DECRYPT_FAILED if the stanza was altered or belongs to another identity
 * or transfer.
 */
export function openSelfStanza(sender: Identity, transferId: string, stanza: RecipientStanza): TransferKeys {
  if (stanza.to !== sender.peerId) throw new SftError('DECRYPT_FAILED', 'The saved transfer key belongs to another identity.');
  const secret = Buffer.concat([sender.agree(stanza.ephemeral), sender.agree(sender.agreePublicKey)]);
  const wrapKey = wrapKeyFor(transferId, stanza.ephemeral, sender, sender, secret);
  let fileKey: Buffer;
  try {
    fileKey = open(wrapKey, ZERO_NONCE, stanza.wrappedKey);
  } catch (error) {
    throw new SftError('DECRYPT_FAILED', 'The saved transfer key could not be unwrapped.', error);
  }
  return deriveTransferKeys(fileKey, transferId);
}

export function sealOffer(
  input: SealOfferInput,
  randomness?: SealRandomness,
): { offer: SealedOffer; keys: TransferKeys; layout: PayloadLayout; selfStanza?: RecipientStanza } {
  const { sender, recipients, transferId, header } = input;
  if (recipients.length === 0) throw new SftError('BAD_MESSAGE', 'An offer needs at least one recipient.');
  for (const r of recipients) {
    // The id is what the user chose (and may have verified); the keys must be the ones it names.
    if (peerIdOf(r.signPublicKey, r.agreePublicKey) !== r.peerId) {
      throw new SftError('BAD_SIGNATURE', `The keys offered for ${r.peerId} do not belong to it.`);
    }
  }
  const fileKey = randomness?.fileKey ?? randomBytes(KEY_BYTES);
  const stanzas = recipients.map((recipient, i): RecipientStanza => stanzaFor(sender, recipient, transferId, fileKey, randomness?.ephemerals[i] ?? generateKeyPair('x25519')));
  const selfStanza = input.sealToSelf ? stanzaFor(sender, sender, transferId, fileKey, generateKeyPair('x25519')) : undefined;
  const keys = deriveTransferKeys(fileKey, transferId);
  const layout = layoutFor(header.plainBytes, header.chunkSize);
  const unsigned = {
    transferId,
    sender: sender.publicIdentity,
    createdAt: input.createdAt,
    chunkSize: layout.chunkSize,
    chunkCount: layout.chunkCount,
    cipherBytes: layout.cipherBytes,
    stanzas,
    header: seal(keys.headerKey, ZERO_NONCE, Buffer.from(JSON.stringify(header), 'utf8')),
  };
  return { offer: { ...unsigned, signature: sender.sign(offerTranscript(unsigned)) }, keys, layout, ...(selfStanza ? { selfStanza } : {}) };
}

export interface OpenedOffer {
  readonly header: TransferHeader;
  readonly keys: TransferKeys;
  readonly layout: PayloadLayout;
}

/**
 * Checks an offer end to end and returns its header and keys, or throws with the code that names
 * the failed check. The header's shape is checked here; its names are checked by names.ts.
 */
export function openOffer(offer: SealedOffer, recipient: Identity): OpenedOffer {
  const { sender } = offer;
  if (peerIdOf(sender.signPublicKey, sender.agreePublicKey) !== sender.peerId) {
    throw new SftError('BAD_SIGNATURE', "The offer's sender id does not match its keys.");
  }
  if (!verify(sender.signPublicKey, offerTranscript(offer), offer.signature)) {
    throw new SftError('BAD_SIGNATURE', 'The offer is not signed by its sender.');
  }
  const stanza = offer.stanzas.find((s) => s.to === recipient.peerId);
  if (!stanza) throw new SftError('NOT_FOR_ME', 'The offer has no key for this identity.');
  const secret = Buffer.concat([recipient.agree(stanza.ephemeral), recipient.agree(sender.agreePublicKey)]);
  const wrapKey = wrapKeyFor(offer.transferId, stanza.ephemeral, sender, recipient, secret);
  const fileKey = open(wrapKey, ZERO_NONCE, stanza.wrappedKey);
  const keys = deriveTransferKeys(fileKey, offer.transferId);
  let header: TransferHeader;
  try {
    header = parseHeader(JSON.parse(open(keys.headerKey, ZERO_NONCE, offer.header).toString('utf8')));
  } catch (error) {
    if (error instanceof SftError && error.code === 'INTEGRITY') throw error;
    throw new SftError('DECRYPT_FAILED', 'The offer header could not be decrypted.', error);
  }
  const layout = layoutFor(header.plainBytes, header.chunkSize);
  if (layout.chunkCount !== offer.chunkCount || layout.cipherBytes !== offer.cipherBytes || header.chunkSize !== offer.chunkSize) {
    throw new SftError('INTEGRITY', 'The encrypted header disagrees with the sizes the offer declares.');
  }
  return { header, keys, layout };
}

function isSize(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** The last instant a JavaScript Date (and so a file time set through Node) can hold. */
const MAX_DATE_MS = 8.64e15;

/** Structural check of a decrypted header: it is authenticated, but the sender may still be hostile. */
function parseHeader(value: unknown): TransferHeader {
  const fail = (why: string): never => {
    throw new SftError('INTEGRITY', `The transfer header is malformed: ${why}.`);
  };
  const h = value as Partial<TransferHeader> | null;
  if (!h || h.v !== 1 || !Array.isArray(h.entries) || !isSize(h.chunkSize) || !isSize(h.plainBytes)) fail('missing fields');
  const entries = h!.entries!.map((e: Partial<HeaderEntry>): HeaderEntry => {
    if (!e || typeof e.path !== 'string' || (e.type !== 'file' && e.type !== 'dir') || !isSize(e.size)) fail('bad entry');
    if (e.type === 'dir' && e.size !== 0) fail('a folder with a size');
    return {
      path: e.path!,
      type: e.type!,
      size: e.size!,
      ...(isSize(e.mode) ? { mode: e.mode } : {}),
      // A time no file can carry is dropped, as an invalid mode is: the file keeps the time it is received.
      ...(isSize(e.mtimeMs) && e.mtimeMs <= MAX_DATE_MS ? { mtimeMs: e.mtimeMs } : {}),
    };
  });
  const total = entries.reduce((sum, e) => sum + e.size, 0);
  if (total !== h!.plainBytes) fail('the sizes do not add up');
  return { v: 1, entries, chunkSize: h!.chunkSize!, plainBytes: h!.plainBytes! };
}

// ---- The receipt: a recipient signs that it verified every chunk, so a relay cannot fake delivery. ----

export interface ReceiptFacts {
  readonly transferId: string;
  readonly senderPeerId: string;
  readonly chunkCount: number;
  readonly cipherBytes: number;
}

function receiptTranscript(facts: ReceiptFacts, recipient: PublicIdentity): Buffer {
  return encodeParts([Labels.receipt, facts.transferId, facts.senderPeerId, recipient.peerId, facts.chunkCount, facts.cipherBytes]);
}

export function signReceipt(recipient: Identity, facts: ReceiptFacts): Buffer {
  return recipient.sign(receiptTranscript(facts, recipient));
}

export function checkReceipt(recipient: PublicIdentity, facts: ReceiptFacts, receipt: Buffer): boolean {
  return verify(recipient.signPublicKey, receiptTranscript(facts, recipient), receipt);
}

// ---- The join proof: a client shows the relay it holds the private key behind its peer id. ----

/**
 * `origin` is the host (and port) the client itself dialed. A relay that is not at that origin
 * refuses the proof, so a rogue relay cannot pass another relay's challenge to a victim and join
 * that relay with the victim's answer.
 */
export function joinTranscript(challenge: Buffer, relayId: string, origin: string, identity: PublicIdentity): Buffer {
  return encodeParts([Labels.join, challenge, relayId, origin, identity.peerId, identity.signPublicKey, identity.agreePublicKey]);
}

export function proveJoin(identity: Identity, challenge: Buffer, relayId: string, origin: string): Buffer {
  return identity.sign(joinTranscript(challenge, relayId, origin, identity));
}

export function checkJoinProof(identity: PublicIdentity, challenge: Buffer, relayId: string, origin: string, proof: Buffer): boolean {
  return peerIdOf(identity.signPublicKey, identity.agreePublicKey) === identity.peerId && verify(identity.signPublicKey, joinTranscript(challenge, relayId, origin, identity), proof);
}

/** The origin a client signs for a relay URL: its host and port, lower-case. */
export function originOf(url: string): string {
  return new URL(url).host.toLowerCase();
}
