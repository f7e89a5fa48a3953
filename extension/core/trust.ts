/**
 * Trust on first use, then pinning, as SSH and Signal do. A peer id is a hash of the peer's keys,
 * so "the key changed" shows up as a known display name arriving with a new id. The store records
 * every id met (with the name it first had, in order of first contact) and which ids the user has
 * verified (by comparing safety numbers). A name is pinned to the first id met with it, and moves
 * only when the user verifies another id under that name.
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

  /** This id's keys were verified at some point (whatever name they now use; see verdict()). */
  isVerified(peerId: string): boolean {
    return this.state.peers[peerId]?.verifiedAt !== undefined;
  }

  /**
   * The id a name is pinned to: the one most recently verified under that name, or, while none is,
   * the one met first (trust on first use). Names compare as file names do: "ALICE", "Alice" and
   * "Ａｌｉｃｅ" are one name to a person reading them. Ties keep the book's order, which is the
   * order of first contact.
   */
  pinnedId(name: string): string | undefined {
    const key = collisionKey(name);
    let pinned: [string, TrustRecord] | undefined;
    for (const entry of Object.entries(this.state.peers)) {
      const [, r] = entry;
      if (collisionKey(r.name) !== key) continue;
      if (!pinned) {
        pinned = entry;
        continue;
      }
      const p = pinned[1];
      if (r.verifiedAt !== undefined) {
        if (p.verifiedAt === undefined || r.verifiedAt > p.verifiedAt) pinned = entry;
      } else if (p.verifiedAt === undefined && r.firstSeen < p.firstSeen) {
        pinned = entry;
      }
    }
    return pinned?.[0];
  }

  /**
   * Classifies a peer arriving as `name`: 'changed' when that name is pinned to another id (a new
   * key, or someone else using the name), until this id is verified; otherwise 'verified' once the
   * user compared safety numbers with it, 'seen' when met before, 'new' on first contact.
   */
  verdict(peerId: string, name: string): TrustVerdict {
    const pinned = this.pinnedId(name);
    if (pinned !== undefined && pinned !== peerId) return 'changed';
    if (this.isVerified(peerId)) return 'verified';
    return this.state.peers[peerId] ? 'seen' : 'new';
  }

  /** Records first contact (trust on first use); returns true when something changed. */
  remember(peerId: string, name: string): boolean {
    if (this.state.peers[peerId]) return false;
    this.state.peers[peerId] = { name, firstSeen: new Date().toISOString() };
    return true;
  }

  /**
   * Takes in what another copy of the book knows (another VS Code window saving the same store):
   * every id either has met, with the earlier first contact and the later verification, so that
   * neither copy's pins or verifications are lost when one saves over the other.
   */
  merge(other: TrustState): void {
    for (const [peerId, theirs] of Object.entries(other.peers ?? {})) {
      if (!theirs || typeof theirs.name !== 'string' || typeof theirs.firstSeen !== 'string') continue;
      const ours = this.state.peers[peerId];
      if (!ours) {
        this.state.peers[peerId] = { ...theirs };
        continue;
      }
      const verifiedAt = [ours.verifiedAt, theirs.verifiedAt].filter((v): v is string => typeof v === 'string').sort().at(-1);
      this.state.peers[peerId] = {
        name: ours.name,
        firstSeen: theirs.firstSeen < ours.firstSeen ? theirs.firstSeen : ours.firstSeen,
        ...(verifiedAt !== undefined ? { verifiedAt } : {}),
      };
    }
  }

  /** The user compared safety numbers: `name` is pinned to this id from now on. */
  markVerified(peerId: string, name: string): void {
    const record = this.state.peers[peerId];
    const now = new Date().toISOString();
    // Strictly later than any earlier verification, so this one wins the pin even within a millisecond.
    const latest = Object.values(this.state.peers).reduce<string | undefined>((max, r) => (r.verifiedAt !== undefined && (max === undefined || r.verifiedAt > max) ? r.verifiedAt : max), undefined);
    const verifiedAt = latest !== undefined && latest >= now ? new Date(Date.parse(latest) + 1).toISOString() : now;
    this.state.peers[peerId] = { name, firstSeen: record?.firstSeen ?? now, verifiedAt };
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

/** Saves the book, first taking in what another `sft` process with this identity saved meanwhile. */
export async function saveTrustFile(file: string, book: TrustBook): Promise<void> {
  const current = await loadTrustFile(file).catch(() => undefined);
  if (current) book.merge(current.snapshot);
  return writePrivateJson(file, book.snapshot);
}
