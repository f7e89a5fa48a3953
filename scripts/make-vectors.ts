/**
 * Known-answer test vectors for the crypto layer, in the spirit of age's testkit: one scenario per
 * file under test/vectors/, each with a "description" and an "expect" field, so another
 * implementation (or a later version of this one) can be checked against fixed bytes.
 *
 *   npx tsx scripts/make-vectors.ts           regenerate in memory and diff against test/vectors/
 *                                             (exit 1 on any difference: handy in CI)
 *   npx tsx scripts/make-vectors.ts --write   (re)write test/vectors/*.json
 *
 * Everything is deterministic: private keys, file keys and ephemeral keys are SHA-256 of fixed
 * labels, transfer ids are 16 fixed bytes, and createdAt is fixed. Ed25519 and AES-GCM are
 * deterministic, so the same code always produces the same bytes. A difference therefore means the
 * wire format or a construction changed, which must be deliberate (and then the vectors rewritten
 * with --write, and the change called out in review).
 *
 * Conventions in the files: raw bytes are lowercase hex, except inside "offer", which is the exact
 * wire form (offerToWire: base64url strings). Header JSON is also given verbatim ("headerJson"),
 * because its key order is part of the sealed bytes.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Labels, encodeParts, hkdf, importPrivateKey, type KeyPair } from '../extension/core/crypto/primitives';
import { chunkNonce, layoutFor, openChunk, sealChunk, type PayloadLayout } from '../extension/core/crypto/stream';
import { Identity, fingerprint, safetyNumber } from '../extension/core/crypto/identity';
import {
  deriveTransferKeys,
  openOffer,
  proveJoin,
  sealOffer,
  type HeaderEntry,
  type TransferHeader,
} from '../extension/core/crypto/envelope';
import { SftError, type ErrorCode } from '../extension/core/errors';
import { offerFromWire, offerToWire, type OfferMessage } from '../extension/core/protocol';

const VECTOR_DIR = path.resolve(__dirname, '..', 'test', 'vectors');
const CHUNK_SIZE = 64; // MIN_CHUNK_SIZE: keeps payload vectors small.
const CREATED_AT = 1_700_000_000_000;

// ---- Deterministic inputs ----

/** 32 fixed bytes: SHA-256 of a label. */
function seed(label: string): Buffer {
  return crypto.createHash('sha256').update(`sft/v1 test vector: ${label}`, 'utf8').digest();
}

const hex = (b: Buffer): string => b.toString('hex');

function transferIdFrom(label: string): string {
  return seed(`transfer id ${label}`).subarray(0, 16).toString('base64url');
}

function ephemeralSeed(label: string): Buffer {
  return seed(`ephemeral ${label}`);
}

/** Deterministic payload bytes: a readable repeating text, offset so files differ. */
function content(length: number, offset = 0): Buffer {
  const text = Buffer.from('Secure File Transfer known-answer vector payload. ', 'utf8');
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = text[(i + offset) % text.length]!;
  return out;
}

function flipBit(bytes: Buffer, byteIndex: number, bit = 0): Buffer {
  const copy = Buffer.from(bytes);
  copy[byteIndex]! ^= 1 << bit;
  return copy;
}

// ---- Identities ----

interface KeySeeds {
  readonly signPrivate: string;
  readonly agreePrivate: string;
}

interface NamedIdentity {
  readonly name: string;
  readonly seeds: KeySeeds;
  readonly identity: Identity;
}

function namedIdentity(name: string): NamedIdentity {
  const signPrivate = seed(`${name} sign`);
  const agreePrivate = seed(`${name} agree`);
  return { name, seeds: { signPrivate: hex(signPrivate), agreePrivate: hex(agreePrivate) }, identity: Identity.fromRawKeys(signPrivate, agreePrivate) };
}

const alice = namedIdentity('alice');
const bob = namedIdentity('bob');
const carol = namedIdentity('carol');
const mallory = namedIdentity('mallory');

function identityVector(n: NamedIdentity) {
  const id = n.identity;
  return {
    name: n.name,
    signPrivate: n.seeds.signPrivate,
    agreePrivate: n.seeds.agreePrivate,
    signPublic: hex(id.signPublicKey),
    agreePublic: hex(id.agreePublicKey),
    peerId: id.peerId,
    fingerprint: fingerprint(id),
    secret: id.toSecret(),
  };
}

function identityFile() {
  const all = [alice, bob, carol];
  const pairs: Array<[NamedIdentity, NamedIdentity]> = [
    [alice, bob],
    [alice, carol],
    [bob, carol],
  ];
  const challenge = seed('join challenge');
  const relayId = 'relay.example.test';
  const origin = 'relay.example.test:7474';
  return {
    description:
      'Identities from fixed raw private keys (Ed25519 seed, X25519 scalar; both SHA-256 of fixed labels): public keys, peer id (base32 of 128 bits of SHA-256 over both keys), fingerprint, secret form, the safety number of each pair (the same in both orders), and a join proof (Ed25519 is deterministic).',
    expect: 'success',
    identities: all.map(identityVector),
    safetyNumbers: pairs.map(([a, b]) => {
      const forward = safetyNumber(a.identity, b.identity);
      if (forward !== safetyNumber(b.identity, a.identity)) throw new Error('safetyNumber is not symmetric');
      return { a: a.name, b: b.name, safetyNumber: forward };
    }),
    joinProofs: all.map((n) => ({ identity: n.name, challenge: hex(challenge), relayId, origin, proof: hex(proveJoin(n.identity, challenge, relayId, origin)) })),
  };
}

// ---- Primitives ----

type Part = { type: 'string'; value: string } | { type: 'hex'; value: string } | { type: 'number'; value: number };

function partValue(p: Part): Buffer | string | number {
  return p.type === 'hex' ? Buffer.from(p.value, 'hex') : p.value;
}

function primitivesFile() {
  const indexes = [0, 1, 255, 2 ** 32, 2 ** 40 + 5, Number.MAX_SAFE_INTEGER];
  const ikm = seed('hkdf ikm');
  const salt = seed('hkdf salt').subarray(0, 16);
  const partLists: Part[][] = [
    [],
    [{ type: 'string', value: '' }],
    [
      { type: 'string', value: 'ab' },
      { type: 'string', value: 'c' },
    ],
    [
      { type: 'string', value: 'a' },
      { type: 'string', value: 'bc' },
    ],
    [
      { type: 'string', value: 'sft/v1 offer' },
      { type: 'hex', value: '00ff' },
      { type: 'number', value: 0 },
      { type: 'number', value: Number.MAX_SAFE_INTEGER },
    ],
  ];
  const fileKey = seed('file key primitives');
  const transferId = transferIdFrom('primitives');
  const keys = deriveTransferKeys(fileKey, transferId);
  return {
    description:
      'Building blocks: STREAM chunk nonces (uint88 big-endian index, then the final flag), HKDF-SHA-256 under each project label (info = the label as UTF-8), length-prefixed encodeParts, the per-transfer header and payload keys, and payload layouts for a 64-byte chunk size.',
    expect: 'success',
    chunkNonces: indexes.flatMap((index) => [false, true].map((final) => ({ index, final, nonce: hex(chunkNonce(index, final)) }))),
    hkdf: Object.entries(Labels).map(([name, info]) => ({ name, ikm: hex(ikm), salt: hex(salt), info, length: 32, okm: hex(hkdf(ikm, salt, info, 32)) })),
    encodeParts: partLists.map((parts) => ({ parts, encoded: hex(encodeParts(parts.map(partValue))) })),
    transferKeys: [{ fileKey: hex(fileKey), transferId, headerKey: hex(keys.headerKey), payloadKey: hex(keys.payloadKey) }],
    layouts: [0, 1, 63, 64, 65, 128, 200].map((plainBytes) => ({ ...layoutFor(plainBytes, CHUNK_SIZE) })),
  };
}

// ---- Transfers ----

type Expect = 'success' | 'header failure' | 'payload failure' | 'signature failure' | 'not for me';

interface ExpectedError {
  readonly code: ErrorCode;
  /** Where the receiver must fail: opening the offer, or opening chunk `chunkIndex`. */
  readonly stage: 'openOffer' | 'openChunk';
  readonly chunkIndex?: number;
}

interface FileInput {
  readonly entry: HeaderEntry;
  readonly content: Buffer;
}

interface Sealed {
  readonly seal: {
    readonly sender: string;
    readonly recipients: readonly string[];
    readonly transferId: string;
    readonly createdAt: number;
    readonly fileKey: string;
    readonly ephemerals: readonly string[];
    readonly header: TransferHeader;
    readonly headerJson: string;
    readonly plaintext: string;
  };
  readonly offer: OfferMessage;
  readonly chunks: readonly string[];
  readonly layout: PayloadLayout;
  readonly files: readonly FileInput[];
}

function header(files: readonly FileInput[]): TransferHeader {
  return { v: 1, entries: files.map((f) => f.entry), chunkSize: CHUNK_SIZE, plainBytes: files.reduce((n, f) => n + f.content.length, 0) };
}

function fileEntry(p: string, data: Buffer, extra: Partial<Pick<HeaderEntry, 'mode' | 'mtimeMs'>> = {}): FileInput {
  return { entry: { path: p, type: 'file', size: data.length, ...extra }, content: data };
}

function dirEntry(p: string): FileInput {
  return { entry: { path: p, type: 'dir', size: 0 }, content: Buffer.alloc(0) };
}

function sealTransfer(label: string, files: readonly FileInput[], options: { recipients?: NamedIdentity[]; transferHeader?: TransferHeader } = {}): Sealed {
  const recipients = options.recipients ?? [bob];
  const transferHeader = options.transferHeader ?? header(files);
  const fileKeyRaw = seed(`file key ${label}`);
  const ephemeralRaw = recipients.map((r) => ephemeralSeed(`${label} ${r.name}`));
  const ephemerals: KeyPair[] = ephemeralRaw.map((raw) => importPrivateKey('x25519', raw));
  const transferId = transferIdFrom(label);
  const { offer, keys, layout } = sealOffer(
    { sender: alice.identity, recipients: recipients.map((r) => r.identity.publicIdentity), transferId, header: transferHeader, createdAt: CREATED_AT },
    { fileKey: fileKeyRaw, ephemerals },
  );
  const plaintext = Buffer.concat(files.map((f) => f.content));
  const chunks: string[] = [];
  if (plaintext.length === transferHeader.plainBytes) {
    for (let i = 0; i < layout.chunkCount; i++) {
      chunks.push(hex(sealChunk(keys.payloadKey, layout, i, plaintext.subarray(i * layout.chunkSize, Math.min(plaintext.length, (i + 1) * layout.chunkSize)))));
    }
  }
  return {
    seal: {
      sender: alice.name,
      recipients: recipients.map((r) => r.name),
      transferId,
      createdAt: CREATED_AT,
      fileKey: hex(fileKeyRaw),
      ephemerals: ephemeralRaw.map(hex),
      header: transferHeader,
      headerJson: JSON.stringify(transferHeader),
      plaintext: hex(plaintext),
    },
    offer: offerToWire(offer),
    chunks,
    layout,
    files,
  };
}

function identitiesOf(...names: NamedIdentity[]) {
  return Object.fromEntries(names.map((n) => [n.name, { ...n.seeds, peerId: n.identity.peerId }]));
}

interface TransferVector {
  description: string;
  expect: Expect;
  error: ExpectedError | null;
  mutation?: string;
  identities: Record<string, KeySeeds & { peerId: string }>;
  openAs: string[];
  seal: Sealed['seal'];
  offer: OfferMessage;
  chunks: readonly string[];
  receiverLayout?: PayloadLayout;
  expected?: {
    header: TransferHeader;
    layout: PayloadLayout;
    plaintext: string;
    files: Array<{ path: string; type: 'file' | 'dir'; content: string }>;
  };
}

function success(description: string, s: Sealed, openAs: NamedIdentity[]): TransferVector {
  return {
    description,
    expect: 'success',
    error: null,
    identities: identitiesOf(alice, ...openAs),
    openAs: openAs.map((r) => r.name),
    seal: s.seal,
    offer: s.offer,
    chunks: s.chunks,
    expected: {
      header: s.seal.header,
      layout: s.layout,
      plaintext: s.seal.plaintext,
      files: s.files.map((f) => ({ path: f.entry.path, type: f.entry.type, content: hex(f.content) })),
    },
  };
}

function failure(
  description: string,
  expect: Expect,
  error: ExpectedError,
  mutation: string,
  s: Sealed,
  changes: { offer?: OfferMessage; chunks?: readonly string[]; openAs?: NamedIdentity; extraIdentities?: NamedIdentity[]; receiverLayout?: PayloadLayout },
): TransferVector {
  const receiver = changes.openAs ?? bob;
  return {
    description,
    expect,
    error,
    mutation,
    identities: identitiesOf(alice, bob, ...(changes.extraIdentities ?? []), ...(receiver === bob ? [] : [receiver])),
    openAs: [receiver.name],
    seal: s.seal,
    offer: changes.offer ?? s.offer,
    chunks: changes.chunks ?? s.chunks,
    ...(changes.receiverLayout ? { receiverLayout: changes.receiverLayout } : {}),
  };
}

const b64flip = (value: string, byteIndex: number, bit = 0): string => flipBit(Buffer.from(value, 'base64url'), byteIndex, bit).toString('base64url');

/** What a receiver following the vector's steps runs into: null, or the first failure. */
function outcome(v: TransferVector, name: string): ExpectedError | null {
  const keys = v.identities[name]!;
  const receiver = Identity.fromRawKeys(Buffer.from(keys.signPrivate, 'hex'), Buffer.from(keys.agreePrivate, 'hex'));
  let opened;
  try {
    opened = openOffer(offerFromWire(v.offer), receiver);
  } catch (error) {
    if (error instanceof SftError) return { code: error.code, stage: 'openOffer' };
    throw error;
  }
  const layout = v.receiverLayout ?? opened.layout;
  for (let i = 0; i < v.chunks.length; i++) {
    try {
      openChunk(opened.keys.payloadKey, layout, i, Buffer.from(v.chunks[i]!, 'hex'));
    } catch (error) {
      if (error instanceof SftError) return { code: error.code, stage: 'openChunk', chunkIndex: i };
      throw error;
    }
  }
  return null;
}

/** The generator checks every vector against the current code before emitting it. */
function check(v: TransferVector): void {
  for (const name of v.openAs) {
    const got = JSON.stringify(outcome(v, name));
    if (got !== JSON.stringify(v.error)) throw new Error(`vector "${v.description}" opened by ${name}: expected ${JSON.stringify(v.error)}, got ${got}`);
  }
}

function transferFiles(): Record<string, TransferVector> {
  const out: Record<string, TransferVector> = {};

  const empty = sealTransfer('empty', [fileEntry('empty.txt', Buffer.alloc(0))]);
  out['transfer-empty'] = success('One empty file: a 0-byte payload is still one (empty) final chunk of 16 tag bytes.', empty, [bob]);

  const one = sealTransfer('one-byte', [fileEntry('one.txt', content(1))]);
  out['transfer-one-byte'] = success('One 1-byte file: a single short final chunk.', one, [bob]);

  const exact = sealTransfer('one-chunk', [fileEntry('exact.bin', content(64))]);
  out['transfer-one-chunk'] = success('One 64-byte file with chunkSize 64: exactly one full chunk, which is the final one.', exact, [bob]);

  const plusOne = sealTransfer('chunk-plus-one', [fileEntry('plus-one.bin', content(65))]);
  out['transfer-chunk-plus-one'] = success('One 65-byte file: a full chunk (final = 0) then a 1-byte final chunk.', plusOne, [bob]);

  const several = sealTransfer('several-files', [
    dirEntry('docs'),
    fileEntry('docs/readme.txt', content(30, 3), { mode: 0o644, mtimeMs: 1_699_999_000_000 }),
    fileEntry('docs/empty.txt', Buffer.alloc(0), { mode: 0o644 }),
    fileEntry('run.sh', content(100, 11), { mode: 0o755 }),
  ]);
  out['transfer-several-files'] = success(
    'A folder entry, a 30-byte file, an empty file and a 100-byte file: the payload is the files concatenated in header order (130 bytes, chunks of 64, 64, 2); folders contribute no bytes.',
    several,
    [bob],
  );

  const two = sealTransfer('two-recipients', [fileEntry('shared.txt', content(80, 5))], { recipients: [bob, carol] });
  out['transfer-two-recipients'] = success('One 80-byte file for two recipients (one stanza each, one shared payload); each recipient opens it with their own keys.', two, [bob, carol]);

  // The base of the negative scenarios: 200 bytes, chunks of 64, 64, 64 and 8.
  const base = sealTransfer('four-chunks', [fileEntry('four.bin', content(200, 17))]);
  out['transfer-four-chunks'] = success('One 200-byte file: chunks of 64, 64, 64 and 8 bytes. The base of the transfer-*-failure vectors below.', base, [bob]);

  const sig: ExpectedError = { code: 'BAD_SIGNATURE', stage: 'openOffer' };

  out['transfer-header-flipped'] = failure(
    'The encrypted header with one bit flipped. The signature covers the header ciphertext, so the signature check fails before any decryption.',
    'signature failure',
    sig,
    'offer.header: bit 0 of byte 0 flipped',
    base,
    { offer: { ...base.offer, header: b64flip(base.offer.header, 0) } },
  );

  out['transfer-wrapped-key-flipped'] = failure(
    "The recipient's wrapped file key with one bit flipped. Stanzas are signed, so this is a signature failure rather than a decryption failure.",
    'signature failure',
    sig,
    'offer.stanzas[0].wrappedKey: bit 0 of byte 0 flipped',
    base,
    { offer: { ...base.offer, stanzas: base.offer.stanzas.map((s, i) => (i === 0 ? { ...s, wrappedKey: b64flip(s.wrappedKey, 0) } : s)) } },
  );

  out['transfer-signature-flipped'] = failure(
    'The signature with one bit flipped.',
    'signature failure',
    sig,
    'offer.signature: bit 0 of byte 10 flipped',
    base,
    { offer: { ...base.offer, signature: b64flip(base.offer.signature, 10) } },
  );

  out['transfer-sender-key-substituted'] = failure(
    "The sender's agreement key replaced by Mallory's, keeping the sender's peer id: the peer id no longer matches the keys.",
    'signature failure',
    sig,
    "offer.sender.agreePublicKey: replaced by mallory's",
    base,
    { offer: { ...base.offer, sender: { ...base.offer.sender, agreePublicKey: mallory.identity.agreePublicKey.toString('base64url') } }, extraIdentities: [mallory] },
  );

  out['transfer-sender-substituted'] = failure(
    "The whole sender identity (id and both keys, consistent with each other) replaced by Mallory's: the id checks out, but Alice's signature does not verify under Mallory's key.",
    'signature failure',
    sig,
    "offer.sender: replaced by mallory's peer id and keys",
    base,
    {
      offer: {
        ...base.offer,
        sender: { peerId: mallory.identity.peerId, signPublicKey: mallory.identity.signPublicKey.toString('base64url'), agreePublicKey: mallory.identity.agreePublicKey.toString('base64url') },
      },
      extraIdentities: [mallory],
    },
  );

  out['transfer-not-for-me'] = failure(
    'A valid offer from Alice to Bob, opened by Carol: it has no stanza for her.',
    'not for me',
    { code: 'NOT_FOR_ME', stage: 'openOffer' },
    'none (opened by carol)',
    base,
    { openAs: carol },
  );

  // Header failures: a validly signed offer whose decrypted header is malformed (a hostile or buggy sender).
  const badSizes = sealTransfer('header-sizes', [fileEntry('a.txt', content(10))], { transferHeader: { v: 1, entries: [{ path: 'a.txt', type: 'file', size: 10 }], chunkSize: CHUNK_SIZE, plainBytes: 9 } });
  out['transfer-header-sizes-mismatch'] = failure(
    'A signed offer whose header entries add up to 10 bytes while it declares plainBytes = 9. Authenticated but malformed: the header check fails.',
    'header failure',
    { code: 'INTEGRITY', stage: 'openOffer' },
    'none: sealed by the sender as is (no payload chunks)',
    badSizes,
    {},
  );

  const dirWithSize = sealTransfer('header-dir-size', [], { transferHeader: { v: 1, entries: [{ path: 'folder', type: 'dir', size: 5 }], chunkSize: CHUNK_SIZE, plainBytes: 5 } });
  out['transfer-header-dir-with-size'] = failure(
    'A signed offer whose header lists a folder with a size of 5 bytes. Authenticated but malformed: the header check fails.',
    'header failure',
    { code: 'INTEGRITY', stage: 'openOffer' },
    'none: sealed by the sender as is (no payload chunks)',
    dirWithSize,
    {},
  );

  // Payload failures: the offer is the valid base offer; the chunks are tampered with.
  const c = base.chunks;
  const payload = (chunkIndex: number): ExpectedError => ({ code: 'INTEGRITY', stage: 'openChunk', chunkIndex });

  out['transfer-chunk-flipped'] = failure(
    'Chunk 1 with one bit flipped.',
    'payload failure',
    payload(1),
    'chunks[1]: bit 0 of byte 5 flipped',
    base,
    { chunks: c.map((x, i) => (i === 1 ? hex(flipBit(Buffer.from(x, 'hex'), 5)) : x)) },
  );

  out['transfer-chunks-swapped'] = failure('Chunks 0 and 1 swapped: the index is in the nonce, so chunk 1 does not open as chunk 0.', 'payload failure', payload(0), 'chunks[0] <-> chunks[1]', base, {
    chunks: [c[1]!, c[0]!, c[2]!, c[3]!],
  });

  out['transfer-chunk-dropped'] = failure('Chunk 1 dropped: chunk 2 arrives where chunk 1 is expected.', 'payload failure', payload(1), 'chunks[1] removed', base, {
    chunks: [c[0]!, c[2]!, c[3]!],
  });

  out['transfer-chunk-duplicated'] = failure(
    'The final chunk sent twice: a chunk beyond the declared chunkCount is refused.',
    'payload failure',
    payload(4),
    'chunks[3] appended again',
    base,
    { chunks: [...c, c[3]!] },
  );

  const truncatedLayout = layoutFor((c.length - 1) * CHUNK_SIZE, CHUNK_SIZE);
  out['transfer-truncated'] = failure(
    'The final chunk cut off: the receiver has chunks 0..2 of 4. An honest receiver sees chunks.length < offer.chunkCount; this vector also shows that a receiver which treats the last chunk it got as final (receiverLayout: chunkCount 3) still fails, because chunk 2 was sealed with final = 0.',
    'payload failure',
    payload(c.length - 2),
    'chunks[3] removed; opened with receiverLayout, which makes chunk 2 the final one',
    base,
    { chunks: c.slice(0, -1), receiverLayout: truncatedLayout },
  );

  const other = sealTransfer('four-chunks-other', [fileEntry('four.bin', content(200, 17))]);
  out['transfer-chunk-replayed'] = failure(
    'Chunk 1 replaced by chunk 1 of another transfer of the same file between the same people (different transfer id and file key, so a different payload key).',
    'payload failure',
    payload(1),
    `chunks[1]: replaced by chunk 1 of transfer ${other.seal.transferId}`,
    base,
    { chunks: c.map((x, i) => (i === 1 ? other.chunks[1]! : x)) },
  );

  for (const v of Object.values(out)) check(v);
  return out;
}

// ---- Output ----

function buildVectors(): Map<string, string> {
  const files = new Map<string, string>();
  const put = (name: string, value: unknown) => files.set(`${name}.json`, `${JSON.stringify(value, null, 2)}\n`);
  put('identity', identityFile());
  put('primitives', primitivesFile());
  for (const [name, vector] of Object.entries(transferFiles())) put(name, vector);
  return files;
}

function main(): void {
  const write = process.argv.includes('--write');
  const unknown = process.argv.slice(2).filter((a) => a !== '--write');
  if (unknown.length > 0) {
    process.stderr.write(`Unknown argument(s): ${unknown.join(' ')}\nUsage: npx tsx scripts/make-vectors.ts [--write]\n`);
    process.exit(2);
  }
  const files = buildVectors();
  const existing = fs.existsSync(VECTOR_DIR) ? fs.readdirSync(VECTOR_DIR).filter((f) => f.endsWith('.json')) : [];
  const stale = existing.filter((f) => !files.has(f));

  if (write) {
    fs.mkdirSync(VECTOR_DIR, { recursive: true });
    for (const [name, text] of files) fs.writeFileSync(path.join(VECTOR_DIR, name), text);
    for (const name of stale) {
      fs.unlinkSync(path.join(VECTOR_DIR, name));
      process.stdout.write(`removed stale ${name}\n`);
    }
    process.stdout.write(`wrote ${files.size} vector files to ${path.relative(process.cwd(), VECTOR_DIR) || '.'}\n`);
    return;
  }

  const problems: string[] = [];
  for (const [name, text] of files) {
    const file = path.join(VECTOR_DIR, name);
    if (!fs.existsSync(file)) problems.push(`missing: ${name}`);
    else if (fs.readFileSync(file, 'utf8') !== text) problems.push(`differs: ${name}`);
  }
  for (const name of stale) problems.push(`stale (not generated any more): ${name}`);
  if (problems.length > 0) {
    process.stderr.write(`${problems.join('\n')}\nThe committed vectors do not match the current code. If the change is deliberate, run: npx tsx scripts/make-vectors.ts --write\n`);
    process.exit(1);
  }
  process.stdout.write(`all ${files.size} vector files match\n`);
}

main();
