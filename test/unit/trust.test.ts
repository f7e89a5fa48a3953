import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { TrustBook, loadTrustFile, saveTrustFile } from '../../extension/core/trust';

test('trust on first use, then pinning: a verified name arriving with another id is "changed", in any case', () => {
  const book = new TrustBook();
  assert.equal(book.verdict('id-alice', 'Alice'), 'new');
  book.remember('id-alice', 'Alice');
  assert.equal(book.verdict('id-alice', 'Alice'), 'seen');
  book.markVerified('id-alice', 'Alice');
  assert.equal(book.verdict('id-alice', 'Alice'), 'verified');
  assert.equal(book.verdict('id-mallory', 'Alice'), 'changed');
  assert.equal(book.verdict('id-mallory', 'ALICE'), 'changed');
  assert.equal(book.verdict('id-mallory', 'Ａｌｉｃｅ'), 'changed', 'fullwidth letters read the same');
  assert.equal(book.verdict('id-bob', 'Bob'), 'new');
  assert.equal(book.verdict('id-alice', 'alice'), 'verified');
});

test('pinned on first contact: a name seen (not verified) with one id is "changed" when another id arrives with it', () => {
  const book = new TrustBook();
  book.remember('id-bob', 'Bob');
  assert.equal(book.verdict('id-bob', 'Bob'), 'seen');
  assert.equal(book.verdict('id-mallory', 'Bob'), 'changed', 'before it is even remembered');
  book.remember('id-mallory', 'Bob');
  assert.equal(book.verdict('id-mallory', 'Bob'), 'changed', 'remembering it does not make it the pin');
  assert.equal(book.verdict('id-mallory', 'bob'), 'changed');
  assert.equal(book.verdict('id-mallory', 'ＢＯＢ'), 'changed', 'case and width folded');
  assert.equal(book.verdict('id-bob', 'Bob'), 'seen', 'the first id met keeps the name');
  assert.equal(book.pinnedId('BOB'), 'id-bob');
  // The same key under a name nobody had is not a change: it is the peer who renamed.
  assert.equal(book.verdict('id-mallory', 'Mallory'), 'seen');
});

test('two ids seen with one name: the one met later is "changed", unless it is the one verified', () => {
  const book = new TrustBook();
  // Met in one presence list: the book's order (first contact) breaks the tie.
  book.remember('id-first', 'Dana');
  book.remember('id-second', 'DANA');
  assert.equal(book.verdict('id-first', 'Dana'), 'seen');
  assert.equal(book.verdict('id-second', 'DANA'), 'changed');
  // Verifying the later one moves the pin to it, until verified again.
  book.markVerified('id-second', 'DANA');
  assert.equal(book.verdict('id-second', 'Dana'), 'verified');
  assert.equal(book.verdict('id-first', 'Dana'), 'changed');
  book.markVerified('id-first', 'Dana');
  assert.equal(book.verdict('id-first', 'Dana'), 'verified');
  assert.equal(book.verdict('id-second', 'Dana'), 'changed', 'the most recent verification wins, even within a millisecond');
});

test('an old key coming back after the new one was verified is "changed"', () => {
  const book = new TrustBook();
  book.remember('id-old', 'Erin');
  book.markVerified('id-old', 'Erin');
  book.remember('id-new', 'Erin');
  assert.equal(book.verdict('id-new', 'Erin'), 'changed', 'Erin reset her keys');
  book.markVerified('id-new', 'Erin');
  assert.equal(book.verdict('id-new', 'Erin'), 'verified');
  assert.equal(book.isVerified('id-old'), true, 'the old verification is kept on record');
  assert.equal(book.verdict('id-old', 'Erin'), 'changed', 'but the old key no longer holds the name');
  // A verified key taking another verified name is no less a change for whoever reads that name.
  book.markVerified('id-frank', 'Frank');
  assert.equal(book.verdict('id-frank', 'Erin'), 'changed');
});

test('pins survive a save and load (the CLI trust file), order of first contact included', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-trust-'));
  try {
    const file = path.join(dir, 'trust.json');
    const book = new TrustBook();
    book.remember('id-zed', 'Gus');
    book.remember('id-abe', 'Gus');
    book.remember('id-hal', 'Hal');
    book.markVerified('id-hal', 'Hal');
    await saveTrustFile(file, book);
    const loaded = await loadTrustFile(file);
    assert.equal(loaded.verdict('id-zed', 'Gus'), 'seen');
    assert.equal(loaded.verdict('id-abe', 'Gus'), 'changed');
    assert.equal(loaded.verdict('id-hal', 'Hal'), 'verified');
    assert.equal(loaded.verdict('id-other', 'hal'), 'changed');
    // The extension keeps the same state in VS Code's global state, as JSON: a round trip is the same.
    const copy = new TrustBook(JSON.parse(JSON.stringify(book.snapshot)));
    assert.equal(copy.verdict('id-abe', 'Gus'), 'changed');
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('two copies of the book (two VS Code windows) merge without losing a pin or a verification', () => {
  const stored = new TrustBook();
  stored.remember('id-bob', 'Bob');
  const window1 = new TrustBook(structuredClone(stored.snapshot));
  const window2 = new TrustBook(structuredClone(stored.snapshot));
  window1.remember('id-carol', 'Carol'); // Met only in window 1.
  window2.markVerified('id-bob', 'Bob'); // Verified only in window 2.
  window2.remember('id-dave', 'Dave');
  // Window 2 saves first; window 1 merges what is stored before saving over it.
  window1.merge(window2.snapshot);
  assert.equal(window1.verdict('id-bob', 'Bob'), 'verified', "window 2's verification is kept");
  assert.equal(window1.verdict('id-carol', 'Carol'), 'seen');
  assert.equal(window1.verdict('id-dave', 'Dave'), 'seen', "window 2's first contact is kept");
  assert.equal(window1.verdict('id-mallory', 'Dave'), 'changed', 'and so is its pin');
  assert.equal(window1.snapshot.peers['id-bob']!.firstSeen, stored.snapshot.peers['id-bob']!.firstSeen);
  // Merging is idempotent, and junk in the stored copy is ignored.
  window1.merge(window2.snapshot);
  window1.merge({ peers: { 'id-junk': null as never } });
  assert.deepEqual(Object.keys(window1.snapshot.peers).sort(), ['id-bob', 'id-carol', 'id-dave']);
});

test('a damaged trust file is an error, never a silently empty book', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-trust-'));
  try {
    const file = path.join(dir, 'trust.json');
    assert.deepEqual((await loadTrustFile(file)).snapshot, { peers: {} }, 'a missing file is an empty book');
    const book = new TrustBook();
    book.markVerified('id-alice', 'Alice');
    await saveTrustFile(file, book);
    assert.equal((await loadTrustFile(file)).isVerified('id-alice'), true);
    await fs.writeFile(file, '{"peers": ');
    await assert.rejects(loadTrustFile(file), { code: 'IO' });
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
