/**
 * The identity store: created once, then loaded; two first runs at once (two VS Code windows
 * sharing one SecretStorage) end up with the same identity. The store here is the command-line
 * client's real FileSecretStore in a temporary folder; VS Code's SecretStorage cannot run in a
 * plain Node test, and the race is played by a second writer between the store and the re-read.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FileSecretStore, IDENTITY_SECRET_KEY, loadOrCreateIdentity, type SecretStore } from '../../extension/core/keystore';
import { Identity } from '../../extension/core/crypto/identity';

test('an identity is created once, then loaded; two first runs at once agree on the one stored last', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-keystore-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const file = new FileSecretStore(path.join(dir, 'identity.json'));
  const first = await loadOrCreateIdentity(file);
  assert.equal(first.created, true);
  const again = await loadOrCreateIdentity(file);
  assert.deepEqual([again.created, again.identity.peerId], [false, first.identity.peerId]);

  // Another window stores its own new identity just after this one stored its own.
  const racing = new FileSecretStore(path.join(dir, 'race.json'));
  const other = Identity.generate();
  let raced = false;
  const store: SecretStore = {
    get: (key) => racing.get(key),
    store: async (key, value) => {
      await racing.store(key, value);
      if (!raced && key === IDENTITY_SECRET_KEY) {
        raced = true;
        await racing.store(key, JSON.stringify(other.toSecret()));
      }
    },
    delete: (key) => racing.delete(key),
  };
  const mine = await loadOrCreateIdentity(store);
  assert.equal(mine.identity.peerId, other.peerId, 'this window uses the identity that was kept');
  assert.equal((await loadOrCreateIdentity(racing)).identity.peerId, other.peerId);
});
