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
