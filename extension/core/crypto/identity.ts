/**
 * Identities. Each user holds an Ed25519 signing key and an X25519 agreement key. The peer id is a
 * hash of both public keys, so it is self-certifying: a relay that swaps a peer's keys changes
 * its id too, and the safety number the two users compare changes with it.
 */
import type crypto from 'node:crypto';
import {
  KEY_BYTES,
  Labels,
  encodeParts,
  generateKeyPair,
  importPrivateKey,
  rawPrivateKey,
  sha256,
  sha512,
  sign,
  x25519,
} from './primitives';
import { SftError } from '../errors';

/** What everyone may know about an identity. */
export interface PublicIdentity {
  readonly peerId: string;
  readonly signPublicKey: Buffer;
  readonly agreePublicKey: Buffer;
}

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

function base32(bytes: Buffer): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

/** 128 bits of SHA-256 over both public keys, base32: 26 characters. */
export function peerIdOf(signPublicKey: Buffer, agreePublicKey: Buffer): string {
  return base32(sha256(encodeParts([Labels.peerId, signPublicKey, agreePublicKey])).subarray(0, 16));
}

export const PEER_ID_PATTERN = /^[a-z2-7]{26}$/;

/** A short form for display; the full id is always available in tooltips and `sft id`. */
export function shortPeerId(peerId: string): string {
  return peerId.slice(0, 8);
}

// Signal's displayable fingerprint: iterate SHA-512 5200 times over the key, take 30 bytes, turn
// each 5-byte group into 5 decimal digits. The iteration raises the cost of grinding for a key
// whose fingerprint looks like another's.
const FINGERPRINT_ITERATIONS = 5200;

function fingerprintDigits(identity: PublicIdentity): string {
  const key = Buffer.concat([identity.signPublicKey, identity.agreePublicKey]);
  let hash = sha512(encodeParts([Labels.fingerprint, key, identity.peerId]));
  for (let i = 0; i < FINGERPRINT_ITERATIONS; i++) hash = sha512(hash, key);
  let digits = '';
  for (let i = 0; i < 30; i += 5) digits += String(hash.readUIntBE(i, 5) % 100000).padStart(5, '0');
  return digits;
}

function groupDigits(digits: string): string {
  return digits.match(/.{5}/g)!.join(' ');
}

/** This identity's half of every safety number: 30 digits in groups of five. */
export function fingerprint(identity: PublicIdentity): string {
  return groupDigits(fingerprintDigits(identity));
}

/**
 * The safety number of a pair: both 30-digit fingerprints, lower first, so both people see the
 * same 60 digits. If they match when read aloud, no one sits between them.
 */
export function safetyNumber(a: PublicIdentity, b: PublicIdentity): string {
  const [first, second] = [fingerprintDigits(a), fingerprintDigits(b)].sort();
  return groupDigits(first + second);
}

/** The serialized secret form, as kept in SecretStorage or a 0600 file. */
export interface IdentitySecret {
  readonly v: 1;
  readonly sign: string;
  readonly agree: string;
}

export class Identity implements PublicIdentity {
  readonly peerId: string;
  readonly signPublicKey: Buffer;
  readonly agreePublicKey: Buffer;

  private constructor(
    private readonly signPrivateKey: crypto.KeyObject,
    signPublicKey: Buffer,
    private readonly agreePrivateKey: crypto.KeyObject,
    agreePublicKey: Buffer,
  ) {
    this.signPublicKey = signPublicKey;
    this.agreePublicKey = agreePublicKey;
    this.peerId = peerIdOf(signPublicKey, agreePublicKey);
  }

  static generate(): Identity {
    const signing = generateKeyPair('ed25519');
    const agreement = generateKeyPair('x25519');
    return new Identity(signing.privateKey, signing.publicKey, agreement.privateKey, agreement.publicKey);
  }

  static fromRawKeys(signPrivate: Buffer, agreePrivate: Buffer): Identity {
    const signing = importPrivateKey('ed25519', signPrivate);
    const agreement = importPrivateKey('x25519', agreePrivate);
    return new Identity(signing.privateKey, signing.publicKey, agreement.privateKey, agreement.publicKey);
  }

  static fromSecret(secret: unknown): Identity {
    const s = secret as Partial<IdentitySecret> | null;
    if (!s || s.v !== 1 || typeof s.sign !== 'string' || typeof s.agree !== 'string') {
      throw new SftError('BAD_MESSAGE', 'The stored identity is not in a format this version understands.');
    }
    const signRaw = Buffer.from(s.sign, 'base64');
    const agreeRaw = Buffer.from(s.agree, 'base64');
    if (signRaw.length !== KEY_BYTES || agreeRaw.length !== KEY_BYTES) {
      throw new SftError('BAD_MESSAGE', 'The stored identity is damaged.');
    }
    return Identity.fromRawKeys(signRaw, agreeRaw);
  }

  toSecret(): IdentitySecret {
    return {
      v: 1,
      sign: rawPrivateKey(this.signPrivateKey).toString('base64'),
      agree: rawPrivateKey(this.agreePrivateKey).toString('base64'),
    };
  }

  get publicIdentity(): PublicIdentity {
    return { peerId: this.peerId, signPublicKey: this.signPublicKey, agreePublicKey: this.agreePublicKey };
  }

  sign(message: Buffer): Buffer {
    return sign(this.signPrivateKey, message);
  }

  agree(peerPublicKey: Buffer): Buffer {
    return x25519(this.agreePrivateKey, peerPublicKey);
  }

  /** Keeps private keys out of logs and JSON.stringify. */
  toJSON(): { peerId: string } {
    return { peerId: this.peerId };
  }
}
