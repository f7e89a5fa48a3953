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

export interface KeyPair {
  readonly publicKey: Buffer;
  readonly privateKey: crypto.KeyObject;
}

/**
 * RFC 8410 DER prefixes: PKCS#8 for a private key, SubjectPublicKeyInfo for a public one; each is
 * followed by the 32 raw key bytes (the RFC 8032 seed or RFC 7748 scalar, and the public key).
 */
const PKCS8_PREFIX: Record<KeyKind, Buffer> = {
  ed25519: Buffer.from('302e020100300506032b657004220420', 'hex'),
  x25519: Buffer.from('302e020100300506032b656e04220420', 'hex'),
};
const SPKI_PREFIX: Record<KeyKind, Buffer> = {
  ed25519: Buffer.from('302a300506032b6570032100', 'hex'),
  x25519: Buffer.from('302a300506032b656e032100', 'hex'),
};

/**
 * A new key pair. The private key is 32 bytes from the CSPRNG, as RFC 8032 (§5.1.5) and RFC 7748
 * (§5) define it, imported as PKCS#8. (Not generateKeyPairSync: on Node 20 its key-generation job
 * can be collected while a key is being exported, and the two wait on one lock for ever.)
 */
export function generateKeyPair(kind: KeyKind): KeyPair {
  return importPrivateKey(kind, crypto.randomBytes(KEY_BYTES));
}

/** The raw key bytes after an RFC 8410 DER prefix, checked. */
function afterPrefix(der: Buffer, prefix: Buffer, what: string): Buffer {
  if (der.length !== prefix.length + KEY_BYTES || !der.subarray(0, prefix.length).equals(prefix)) {
    throw new SftError('INTERNAL', `Unexpected ${what} encoding.`);
  }
  return Buffer.from(der.subarray(prefix.length));
}

function kindOf(key: crypto.KeyObject): KeyKind {
  if (key.asymmetricKeyType === 'ed25519' || key.asymmetricKeyType === 'x25519') return key.asymmetricKeyType;
  throw new SftError('INTERNAL', 'Only Ed25519 and X25519 keys are used.');
}

/** Raw 32-byte public key of a private or public KeyObject. */
export function rawPublicKey(key: crypto.KeyObject): Buffer {
  const der = crypto.createPublicKey(key).export({ format: 'der', type: 'spki' });
  return afterPrefix(der, SPKI_PREFIX[kindOf(key)], 'public key');
}

/** Raw 32-byte private key (the RFC 8032 seed or RFC 7748 scalar). */
export function rawPrivateKey(key: crypto.KeyObject): Buffer {
  return afterPrefix(key.export({ format: 'der', type: 'pkcs8' }), PKCS8_PREFIX[kindOf(key)], 'private key');
}

export function importPrivateKey(kind: KeyKind, raw: Buffer): KeyPair {
  if (raw.length !== KEY_BYTES) throw new SftError('BAD_MESSAGE', 'A private key has the wrong length.');
  const privateKey = crypto.createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX[kind], raw]), format: 'der', type: 'pkcs8' });
  return { privateKey, publicKey: rawPublicKey(privateKey) };
}

export function importPublicKey(kind: KeyKind, raw: Buffer): crypto.KeyObject {
  if (raw.length !== PUBLIC_KEY_BYTES) throw new SftError('BAD_MESSAGE', 'A public key has the wrong length.');
  return crypto.createPublicKey({ key: Buffer.concat([SPKI_PREFIX[kind], raw]), format: 'der', type: 'spki' });
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
