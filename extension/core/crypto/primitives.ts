/**
 * Primitives: thin, typed wrappers over Node's built-in `crypto`. Nothing here is invented; each
 * function is one documented primitive (Ed25519, X25519, HKDF-SHA-256, AES-256-GCM, SHA-256/512).
 * Higher layers (stream.ts, envelope.ts, identity.ts) build the documented constructions from them.
 */
import crypto from 'node:crypto';
import { SftError } from '../errors';

export const KEY_BYTES = 32;
export const TAG_BYTES = 16;
export const NONCE_BYTES = 12;
export const PUBLIC_KEY_BYTES = 32;
export const SIGNATURE_BYTES = 64;

/**
 * Domain-separation labels. Every derived key, transcript and signature carries one, so a value
 * produced for one purpose can never be accepted for another.
 */
export const Labels = {
  peerId: 'sft/v1 peer-id',
  fingerprint: 'sft/v1 fingerprint',
  join: 'sft/v1 join',
  wrapTranscript: 'sft/v1 wrap transcript',
  wrapKey: 'sft/v1 wrap key',
  headerKey: 'sft/v1 header key',
  payloadKey: 'sft/v1 payload key',
  payloadResumeKey: 'sft/v1 payload key resume',
  offer: 'sft/v1 offer',
  receipt: 'sft/v1 receipt',
} as const;

export function randomBytes(length: number): Buffer {
  return crypto.randomBytes(length);
}

/**
 * Length-prefixed concatenation (4-byte big-endian length before each part). Unlike plain
 * concatenation it is injective: no two different lists of parts encode to the same bytes.
 */
export function encodeParts(parts: ReadonlyArray<Buffer | string | number>): Buffer {
  const buffers = parts.map((part) => {
    if (typeof part === 'number') {
      const b = Buffer.alloc(8);
      b.writeBigUInt64BE(BigInt(part));
      return b;
    }
    return typeof part === 'string' ? Buffer.from(part, 'utf8') : part;
  });
  const out = Buffer.alloc(buffers.reduce((n, b) => n + 4 + b.length, 0));
  let offset = 0;
  for (const b of buffers) {
    offset = out.writeUInt32BE(b.length, offset);
    offset += b.copy(out, offset);
  }
  return out;
}

export function sha256(...parts: Buffer[]): Buffer {
  const hash = crypto.createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest();
}

export function sha512(...parts: Buffer[]): Buffer {
  const hash = crypto.createHash('sha512');
  for (const part of parts) hash.update(part);
  return hash.digest();
}

/** HKDF-SHA-256 (RFC 5869). */
export function hkdf(ikm: Buffer, salt: Buffer, info: string, length = KEY_BYTES): Buffer {
  return Buffer.from(crypto.hkdfSync('sha256', ikm, salt, Buffer.from(info, 'utf8'), length));
}

// ---- Keys. Public keys travel as their 32 raw bytes (RFC 8032 / RFC 7748 encodings). ----

export type KeyKind = 'ed25519' | 'x25519';

const JWK_CURVE: Record<KeyKind, string> = { ed25519: 'Ed25519', x25519: 'X25519' };

export interface KeyPair {
  readonly publicKey: Buffer;
  readonly privateKey: crypto.KeyObject;
}

export function generateKeyPair(kind: KeyKind): KeyPair {
  const { privateKey } = kind === 'ed25519' ? crypto.generateKeyPairSync('ed25519') : crypto.generateKeyPairSync('x25519');
  return { privateKey, publicKey: rawPublicKey(privateKey) };
}

/** Raw 32-byte public key of a private or public KeyObject. */
export function rawPublicKey(key: crypto.KeyObject): Buffer {
  const jwk = crypto.createPublicKey(key).export({ format: 'jwk' });
  return Buffer.from(jwk.x as string, 'base64url');
}

/** Raw 32-byte private key (the RFC 8032 seed or RFC 7748 scalar). */
export function rawPrivateKey(key: crypto.KeyObject): Buffer {
  return Buffer.from(key.export({ format: 'jwk' }).d as string, 'base64url');
}

export function importPrivateKey(kind: KeyKind, raw: Buffer): KeyPair {
  if (raw.length !== KEY_BYTES) throw new SftError('BAD_MESSAGE', 'A private key has the wrong length.');
  // Node needs the public half in a JWK; derive it through a PKCS#8 import of the raw key.
  const prefix = Buffer.from(kind === 'ed25519' ? '302e020100300506032b657004220420' : '302e020100300506032b656e04220420', 'hex');
  const privateKey = crypto.createPrivateKey({ key: Buffer.concat([prefix, raw]), format: 'der', type: 'pkcs8' });
  return { privateKey, publicKey: rawPublicKey(privateKey) };
}

export function importPublicKey(kind: KeyKind, raw: Buffer): crypto.KeyObject {
  if (raw.length !== PUBLIC_KEY_BYTES) throw new SftError('BAD_MESSAGE', 'A public key has the wrong length.');
  return crypto.createPublicKey({ key: { kty: 'OKP', crv: JWK_CURVE[kind], x: raw.toString('base64url') }, format: 'jwk' });
}

/** Ed25519 signature (pure, no pre-hash: RFC 8032). */
export function sign(privateKey: crypto.KeyObject, message: Buffer): Buffer {
  return crypto.sign(null, message, privateKey);
}

export function verify(publicKey: Buffer, message: Buffer, signature: Buffer): boolean {
  if (signature.length !== SIGNATURE_BYTES) return false;
  try {
    return crypto.verify(null, message, importPublicKey('ed25519', publicKey), signature);
  } catch {
    return false;
  }
}

/** X25519 (RFC 7748). Refuses an all-zero result, which a low-order public key would force. */
export function x25519(privateKey: crypto.KeyObject, peerPublicKey: Buffer): Buffer {
  let shared: Buffer;
  try {
    shared = crypto.diffieHellman({ privateKey, publicKey: importPublicKey('x25519', peerPublicKey) });
  } catch (error) {
    throw new SftError('DECRYPT_FAILED', 'A key agreement failed: the peer key is not usable.', error);
  }
  if (shared.every((byte) => byte === 0)) throw new SftError('DECRYPT_FAILED', 'A key agreement produced a weak secret.');
  return shared;
}

// ---- AEAD: AES-256-GCM, 96-bit nonce, 128-bit tag appended to the ciphertext. ----

export function seal(key: Buffer, nonce: Buffer, plaintext: Buffer, aad?: Buffer): Buffer {
  const cipher = crypto.createCipheriv('aes-256-gcm', key, nonce);
  if (aad) cipher.setAAD(aad);
  const body = cipher.update(plaintext);
  cipher.final();
  return Buffer.concat([body, cipher.getAuthTag()]);
}

/** Returns the plaintext, or throws DECRYPT_FAILED; never returns unauthenticated bytes. */
export function open(key: Buffer, nonce: Buffer, sealed: Buffer, aad?: Buffer): Buffer {
  if (sealed.length < TAG_BYTES) throw new SftError('DECRYPT_FAILED', 'Encrypted data is too short.');
  const decipher = crypto.createDecipheriv('aes-256-gcm', key, nonce);
  if (aad) decipher.setAAD(aad);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  const body = decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES));
  try {
    decipher.final();
  } catch (error) {
    throw new SftError('DECRYPT_FAILED', 'Encrypted data failed authentication.', error);
  }
  return body;
}

export function constantTimeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}
