/**
 * Transfer journals: the sender's file key is kept only wrapped for the sender itself, journals
 * are private files, damaged ones are dropped, and discarding a receiver's journal removes its
 * partial files but nothing else.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SftError } from '../../extension/core/errors';
import { Identity } from '../../extension/core/crypto/identity';
import { generateKeyPair, randomBytes } from '../../extension/core/crypto/primitives';
import { newTransferId, openSelfStanza, sealOffer } from '../../extension/core/crypto/envelope';
import { offerToWire } from '../../extension/core/protocol';
import { TransferJournal, isPlacedInside, type IncomingRecord, type OutgoingRecord } from '../../extension/core/transfer/journal';
import { temporaryNameFor } from '../../extension/core/names';

const alice = Identity.generate();
const bob = Identity.generate();

function sealed(sealToSelf = true) {
  const fileKey = randomBytes(32);
  const transferId = newTransferId();
  const result = sealOffer(
    {
      sender: alice,
      recipients: [bob.publicIdentity],
      transferId,
      createdAt: Date.now(),
      header: { v: 1, entries: [{ path: 'a.bin', type: 'file', size: 10 }], chunkSize: 64, plainBytes: 10 },
      sealToSelf,
    },
    { fileKey, ephemerals: [generateKeyPair('x25519')] },
  );
  return { ...result, fileKey, transferId };
}

const isCode = (code: string) => (error: unknown) => error instanceof SftError && error.code === code;

test('the stanza a sender wraps for itself gives back its transfer keys, and only to it, for that transfer', () => {
  const { keys, selfStanza, transferId } = sealed();
  assert.ok(selfStanza);
  assert.equal(selfStanza.to, alice.peerId);
  const reopened = openSelfStanza(alice, transferId, selfStanza);
  assert.deepEqual(reopened.payloadKey, keys.payloadKey);
  assert.deepEqual(reopened.payloadKeyFor(3), keys.payloadKeyFor(3));
  assert.deepEqual(reopened.headerKey, keys.headerKey);
  assert.throws(() => openSelfStanza(bob, transferId, selfStanza), isCode('DECRYPT_FAILED'), 'another identity');
  assert.throws(() => openSelfStanza(alice, newTransferId(), selfStanza), isCode('DECRYPT_FAILED'), 'another transfer');
  const flipped = Buffer.from(selfStanza.wrappedKey);
  flipped[0]! ^= 1;
  assert.throws(() => openSelfStanza(alice, transferId, { ...selfStanza, wrappedKey: flipped }), isCode('DECRYPT_FAILED'), 'altered');
  assert.equal(sealed(false).selfStanza, undefined, 'only when asked for');
});

test('a sending journal is a private file that never holds the file key in clear', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-journal-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const journal = new TransferJournal(path.join(dir, 'transfers'));
  const { offer, selfStanza, fileKey, keys, transferId } = sealed();
  const record: OutgoingRecord = {
    v: 1,
    kind: 'send',
    transferId,
    updatedAt: 0,
    offer: offerToWire(offer),
    self: { to: selfStanza!.to, ephemeral: selfStanza!.ephemeral.toString('base64url'), wrappedKey: selfStanza!.wrappedKey.toString('base64url') },
    attempt: 2,
    paths: ['/x/a.bin'],
    recipients: [{ peerId: bob.peerId, name: 'bob', signPublicKey: bob.signPublicKey.toString('base64url'), agreePublicKey: bob.agreePublicKey.toString('base64url') }],
    entries: [{ path: 'a.bin', type: 'file', size: 10 }],
    files: [{ absolutePath: '/x/a.bin', size: 10, mtimeMs: 1700000000123.25 }],
    acked: 0,
  };
  await journal.save(record);
  const file = path.join(dir, 'transfers', `send-${transferId}.json`);
  if (process.platform !== 'win32') {
    assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
    assert.equal((await fs.stat(path.dirname(file))).mode & 0o777, 0o700);
  }
  const text = await fs.readFile(file, 'utf8');
  for (const secret of [fileKey, keys.payloadKey, keys.headerKey]) {
    for (const encoding of ['hex', 'base64', 'base64url'] as const) assert.ok(!text.includes(secret.toString(encoding)), `no key in ${encoding}`);
  }
  const [loaded] = await journal.outgoing();
  assert.equal(loaded!.attempt, 2);
  assert.equal(loaded!.files[0]!.mtimeMs, 1700000000123.25, 'modification times survive exactly');
  assert.ok(loaded!.updatedAt > 0);
  await journal.remove('send', transferId);
  assert.deepEqual(await journal.outgoing(), []);
});

test('damaged journals are dropped; discarding a receiving journal removes only its partial files', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-journal-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const folder = path.join(dir, 'transfers');
  const journal = new TransferJournal(folder);
  const out = path.join(dir, 'out');
  await fs.mkdir(path.join(out, 'sub'), { recursive: true });
  const { offer, transferId } = sealed(false);
  const temp = path.join(out, 'sub', temporaryNameFor('a.bin', transferId));
  await fs.writeFile(temp, 'partial');
  await fs.writeFile(path.join(out, 'keep.txt'), 'keep');
  const record: IncomingRecord = {
    v: 1,
    kind: 'receive',
    transferId,
    updatedAt: 0,
    offer: offerToWire(offer),
    accept: { directory: out, onConflict: 'rename' },
    files: [{ receivedPath: 'sub/a.bin', size: 10, finalPath: path.join(out, 'sub', 'a.bin'), tempPath: temp }],
    createdDirs: [path.join(out, 'sub')],
    verified: 0,
  };
  await journal.save(record);
  await fs.writeFile(path.join(folder, `receive-${newTransferId()}.json`), '{"v":1,');
  // A journal that would have discard() delete a file that is not a partial one is refused.
  await fs.writeFile(path.join(folder, `receive-${newTransferId()}.json`), JSON.stringify({ ...record, transferId: newTransferId(), files: [{ ...record.files[0], tempPath: path.join(out, 'keep.txt') }] }));
  const { records, unreadable } = await journal.list();
  assert.equal(records.length, 1);
  assert.equal(unreadable.length, 2);
  assert.deepEqual((await fs.readdir(folder)).sort(), [`receive-${transferId}.json`], 'unreadable journals are removed');
  assert.ok(TransferJournal.isExpired(records[0]!, 1000, records[0]!.updatedAt + 1001));
  assert.ok(!TransferJournal.isExpired(records[0]!, 1000, records[0]!.updatedAt + 999));
  await journal.discard(records[0]!);
  assert.deepEqual(await fs.readdir(out), ['keep.txt'], 'the partial file and the folder it created are gone, nothing else');
  assert.deepEqual(await fs.readdir(folder), []);
  assert.throws(() => journal.save({ ...record, transferId: '../../etc/passwd' }), { name: 'ZodError' }, 'ids never escape the folder');
  // A journal whose plan lies outside the folder it names (edited) is removed, and nothing it names.
  const elsewhere = path.join(dir, 'elsewhere');
  await fs.mkdir(elsewhere);
  const outside = path.join(elsewhere, temporaryNameFor('a.bin', transferId));
  await fs.writeFile(outside, 'not ours');
  const edited: IncomingRecord = { ...record, files: [{ ...record.files[0]!, finalPath: path.join(elsewhere, 'a.bin'), tempPath: outside }], createdDirs: [] };
  assert.equal(await isPlacedInside(edited), false);
  assert.equal(await isPlacedInside({ ...edited, createdDirs: [elsewhere], files: record.files }), false, 'a created folder outside counts too');
  await journal.save(edited);
  await journal.discard(edited);
  assert.equal(await fs.readFile(outside, 'utf8'), 'not ours');
  assert.deepEqual(await fs.readdir(folder), []);
});

test('a journal still held by a live process is recognised as such', async () => {
  const { offer, transferId } = sealed(false);
  const record: IncomingRecord = {
    v: 1,
    kind: 'receive',
    transferId,
    updatedAt: Date.now(),
    offer: offerToWire(offer),
    accept: { directory: '/tmp', onConflict: 'rename' },
    files: [],
    createdDirs: [],
    verified: 0,
  };
  assert.equal(TransferJournal.isHeldElsewhere(record), false, 'no process recorded');
  assert.equal(TransferJournal.isHeldElsewhere({ ...record, pid: process.pid }), false, 'this process');
  assert.equal(TransferJournal.isHeldElsewhere({ ...record, pid: process.ppid }), true, 'a live process');
  const { spawnSync } = await import('node:child_process');
  const gone = spawnSync(process.execPath, ['-e', '0']).pid!;
  assert.equal(TransferJournal.isHeldElsewhere({ ...record, pid: gone }), false, 'a process that ended');
});
