/**
 * Trust on first use, then pinning, as SSH and Signal do. A peer id is a hash of the peer's keys,
 * so "the key changed" shows up as a known display name arriving with a new id. The store records
 * which ids the user has verified (by comparing safety numbers) and which id each name had.
 */
import fs from 'node:fs/promises';
import { collisionKey } from './names';
import { SftError } from './errors';
import { writePrivateJson } from './private-file';

export interface TrustRecord {
  readonly name: string;
  readonly firstSeen: string;
  readonly verifiedAt?: string;
}

export interface TrustState {
  peers: Record<string, TrustRecord>;
}

export type TrustVerdict = 'verified' | 'new' | 'seen' | 'changed';

export class TrustBook {
  constructor(private state: TrustState = { peers: {} }) {}

  get snapshot(): TrustState {
    return this.state;
  }

  isVerified(peerId: string): boolean {
    return this.state.peers[peerId]?.verifiedAt !== undefined;
  }

  /**
   * Classifies a peer: verified; seen before; new; or changed, when a name the user verified
   * under another id now arrives with this one (a new key, or someone else using the name).
   */
  verdict(peerId: string, name: string): TrustVerdict {
    if (this.isVerified(peerId)) return 'verified';
    // Names compare as file names do: "ALICE" and "Alice" are one name to a person reading them.
    const key = collisionKey(name);
    const other = Object.entries(this.state.peers).find(([id, r]) => id !== peerId && collisionKey(r.name) === key && r.verifiedAt !== undefined);
    if (other) return 'changed';
    return this.state.peers[peerId] ? 'seen' : 'new';
  }

  /** Records first contact (trust on first use); returns true when something changed. */
  remember(peerId: string, name: string): boolean {
    if (this.state.peers[peerId]) return false;
    this.state.peers[peerId] = { name, firstSeen: new Date().toISOString() };
    return true;
  }

  markVerified(peerId: string, name: string): void {
    const record = this.state.peers[peerId];
    this.state.peers[peerId] = { name, firstSeen: record?.firstSeen ?? new Date().toISOString(), verifiedAt: new Date().toISOString() };
  }
}

/** The command-line client's trust book: a JSON file beside the identity. Not secret, but private. */
export async function loadTrustFile(file: string): Promise<TrustBook> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return new TrustBook();
    throw new SftError('IO', `Could not read ${file}.`, error);
  }
  // A damaged book must not silently become an empty one: that would forget every verification.
  const parsed = (() => {
    try {
      return JSON.parse(text) as TrustState;
    } catch {
      return undefined;
    }
  })();
  if (!parsed || typeof parsed.peers !== 'object' || parsed.peers === null) throw new SftError('IO', `${file} is damaged; fix or remove it.`);
  return new TrustBook(parsed);
}

export function saveTrustFile(file: string, book: TrustBook): Promise<void> {
  return writePrivateJson(file, book.snapshot);
}
