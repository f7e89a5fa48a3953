/**
 * Where keys live. The extension passes VS Code's SecretStorage (same get/store/delete shape); the
 * command-line client uses FileSecretStore, a JSON file created with mode 0600 in its own folder.
 * Private keys are never written anywhere else: not to settings, logs, argv or the workspace.
 */
import fs from 'node:fs/promises';
import { Identity } from './crypto/identity';
import { SftError } from './errors';
import { writePrivateJson } from './private-file';

export interface SecretStore {
  get(key: string): PromiseLike<string | undefined>;
  store(key: string, value: string): PromiseLike<void>;
  delete(key: string): PromiseLike<void>;
}

export const IDENTITY_SECRET_KEY = 'sft.identity.v1';

/** Loads this user's identity, creating and storing one on first use. */
export async function loadOrCreateIdentity(store: SecretStore): Promise<{ identity: Identity; created: boolean }> {
  const stored = await store.get(IDENTITY_SECRET_KEY);
  if (stored !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(stored);
    } catch (error) {
      throw new SftError('BAD_MESSAGE', 'The stored identity is damaged.', error);
    }
    return { identity: Identity.fromSecret(parsed), created: false };
  }
  const identity = Identity.generate();
  const secret = JSON.stringify(identity.toSecret());
  await store.store(IDENTITY_SECRET_KEY, secret);
  // Two first runs at once (two VS Code windows): whichever stored last holds, and both use it.
  const kept = await store.get(IDENTITY_SECRET_KEY);
  if (kept !== undefined && kept !== secret) return loadOrCreateIdentity(store);
  return { identity, created: true };
}

/** A secret store in one JSON file, readable by its owner only (mode 0600, folder 0700). */
export class FileSecretStore implements SecretStore {
  constructor(readonly file: string) {}

  async get(key: string): Promise<string | undefined> {
    const all = await this.readAll();
    return typeof all[key] === 'string' ? all[key] : undefined;
  }

  async store(key: string, value: string): Promise<void> {
    const all = await this.readAll();
    all[key] = value;
    await this.writeAll(all);
  }

  async delete(key: string): Promise<void> {
    const all = await this.readAll();
    delete all[key];
    await this.writeAll(all);
  }

  private async readAll(): Promise<Record<string, string>> {
    try {
      return JSON.parse(await fs.readFile(this.file, 'utf8')) as Record<string, string>;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw new SftError('IO', `Could not read ${this.file}.`, error);
    }
  }

  private writeAll(all: Record<string, string>): Promise<void> {
    return writePrivateJson(this.file, all);
  }

}
