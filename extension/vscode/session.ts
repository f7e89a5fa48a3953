/**
 * This window's link to a relay: the identity (from SecretStorage), the team token (SecretStorage,
 * one per relay origin), the trust book (global state; public key hashes, no secrets), and one
 * RelayClient with its Inbox. Everything visible (views, status bar, prompts) listens to it.
 */
import path from 'node:path';
import * as vscode from 'vscode';
import { RelayClient, type ConnectionState } from '../core/client';
import { SftError, toSftError } from '../core/errors';
import { loadOrCreateIdentity, IDENTITY_SECRET_KEY } from '../core/keystore';
import { TrustBook, type TrustState, type TrustVerdict } from '../core/trust';
import { Inbox } from '../core/transfer/receiver';
import { TransferJournal } from '../core/transfer/journal';
import { Identity } from '../core/crypto/identity';
import type { PeerInfo } from '../core/protocol';
import { originOf } from '../core/crypto/envelope';
import { settings } from './settings';
import { safeText } from './text';
import type { Log } from './log';

const TRUST_STATE_KEY = 'sft.trust.v1';
const tokenKey = (url: string) => `sft.teamToken.v1:${originOf(url)}`;

export class Session implements vscode.Disposable {
  private client: RelayClient | undefined;
  private inboxValue: Inbox | undefined;
  private identityValue: Promise<Identity> | undefined;
  /** Bumped by every connect and disconnect, so a superseded connect() knows to stop. */
  private generation = 0;
  private readonly trustBook: TrustBook;
  private readonly stateEmitter = new vscode.EventEmitter<ConnectionState>();
  private readonly peersEmitter = new vscode.EventEmitter<void>();
  private readonly inboxEmitter = new vscode.EventEmitter<Inbox>();
  private readonly trustEmitter = new vscode.EventEmitter<void>();
  /** Fires on every connection state change (the status bar, views and `when` context follow it). */
  readonly onDidChangeState = this.stateEmitter.event;
  readonly onDidChangePeers = this.peersEmitter.event;
  /** Fires with the inbox of each new connection, for the offer prompts. */
  readonly onDidCreateInbox = this.inboxEmitter.event;
  readonly onDidChangeTrust = this.trustEmitter.event;

  /**
   * Transfers keep a journal here (no secrets in it: the sender's file key is sealed
   * to its own key), so they continue after VS Code restarts (core/transfer/journal.ts).
   */
  readonly journal: TransferJournal;
  private readonly connectedEmitter = new vscode.EventEmitter<void>();
  /** Fires each time a new connection first joins: the moment to continue journaled transfers. */
  readonly onDidJoin = this.connectedEmitter.event;

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly log: Log,
  ) {
    this.journal = new TransferJournal(path.join(context.globalStorageUri.fsPath, 'transfers'));
    const stored = context.globalState.get<TrustState>(TRUST_STATE_KEY);
    this.trustBook = new TrustBook(stored && typeof stored.peers === 'object' && stored.peers !== null ? stored : { peers: {} });
  }

  get state(): ConnectionState {
    return this.client?.state ?? (this.connectedUrl ? 'connecting' : 'disconnected');
  }

  /** The relay this window is connected (or connecting) to. */
  get relayUrl(): string | undefined {
    return this.connectedUrl;
  }
  private connectedUrl: string | undefined;

  /** The relay closed this connection because the same identity connected elsewhere (another window). */
  replacedElsewhere = false;

  get peers(): PeerInfo[] {
    return [...(this.client?.peers.values() ?? [])].sort((a, b) => a.name.localeCompare(b.name) || a.peerId.localeCompare(b.peerId));
  }

  verdict(peer: PeerInfo): TrustVerdict {
    return this.trust().verdict(peer.peerId, peer.name);
  }

  /**
   * The trust book, with what another window saved since this one last looked: VS Code carries
   * global state between windows, so a key verified (or a name first met) there counts here at
   * once, not only after this window next saves.
   */
  private trust(): TrustBook {
    const stored = this.context.globalState.get<TrustState>(TRUST_STATE_KEY);
    if (stored !== this.trustSeen && stored && typeof stored.peers === 'object' && stored.peers !== null) this.trustBook.merge(stored);
    this.trustSeen = stored;
    return this.trustBook;
  }
  private trustSeen: TrustState | undefined;

  /** The connected client, or a clear error saying what to do. */
  requireClient(): RelayClient {
    if (!this.client || this.client.state !== 'connected') throw new SftError('NOT_JOINED', 'Not connected to a relay. Run "Secure Transfer: Connect to Relay…" first.');
    return this.client;
  }

  /** Loads this user's keys from SecretStorage, creating them on first use (once, however many ask). */
  identity(): Promise<Identity> {
    this.identityValue ??= loadOrCreateIdentity(this.context.secrets).then(
      ({ identity, created }) => {
        if (created) this.log.info(`Created a new identity (peer id ${identity.peerId}); its keys are in VS Code's secret storage.`);
        return identity;
      },
      (error: unknown) => {
        this.identityValue = undefined;
        throw error;
      },
    );
    return this.identityValue;
  }

  /**
   * After the stored identity changed (another window reset it, or created it at the same time as
   * this one): forgets the copy in use here and says whether it differed, so the caller can
   * connect again with the stored one. False for this window's own write.
   */
  async identityChangedElsewhere(): Promise<boolean> {
    const current = await this.identityValue?.catch(() => undefined);
    if (!current) return false;
    const stored = await this.context.secrets.get(IDENTITY_SECRET_KEY);
    try {
      if (stored !== undefined && Identity.fromSecret(JSON.parse(stored)).peerId === current.peerId) return false;
    } catch {
      // Damaged: loading it again reports that.
    }
    this.identityValue = undefined;
    return true;
  }

  /** Forgets this user's keys: a new identity is made on the next connection. */
  async resetIdentity(): Promise<void> {
    this.disconnect();
    await this.identityValue?.catch(() => undefined);
    await this.context.secrets.delete(IDENTITY_SECRET_KEY);
    this.identityValue = undefined;
  }

  getToken(url: string): Thenable<string | undefined> {
    return this.context.secrets.get(tokenKey(url));
  }

  async setToken(url: string, token: string | undefined): Promise<void> {
    if (token) await this.context.secrets.store(tokenKey(url), token);
    else await this.context.secrets.delete(tokenKey(url));
  }

  /**
   * Connects to `url` (replacing any current connection) and resolves once joined. After a drop the
   * client reconnects by itself, with backoff; transfers under way resume (autoConnect is about
   * connecting at start-up, not this).
   * A newer connect() or a disconnect() supersedes this one: it then rejects with CANCELLED.
   */
  async connect(url: string): Promise<void> {
    this.disconnect();
    this.replacedElsewhere = false;
    const generation = this.generation;
    // From here on the window is "connecting to url", even while the keys load.
    this.connectedUrl = url;
    this.stateEmitter.fire('connecting');
    const identity = await this.identity();
    const token = await this.getToken(url);
    if (generation !== this.generation) throw new SftError('CANCELLED', 'A newer connection replaced this one.');
    const client = new RelayClient({ url, identity, name: settings.displayName(), reconnect: true, ...(token ? { token } : {}) });
    this.client = client;
    let joined = false;
    client.on('state', (state) => {
      if (this.client !== client) return;
      this.log.info(`Relay ${url}: ${state}.`);
      this.stateEmitter.fire(state);
      if (state === 'connected' && !joined) {
        joined = true;
        // Offers wait until the journal of transfers interrupted by a restart has been read.
        inbox.restore().catch((error: unknown) => this.log.warn(`${safeText(toSftError(error).message)}`));
        this.connectedEmitter.fire();
      }
    });
    client.on('peers', () => {
      if (this.client !== client) return;
      let changed = false;
      // Trust on first use: remember every peer met, so a later key change is noticed.
      for (const peer of client.peers.values()) changed = this.trustBook.remember(peer.peerId, peer.name) || changed;
      if (changed) void this.saveTrust();
      this.peersEmitter.fire();
    });
    client.on('notice', (notice) => {
      this.log.warn(`Relay says: ${safeText(notice.message)} (${notice.code})`);
      // One connection per identity: another window (or `sft` with the same keys) took over.
      if (notice.code === 'REPLACED' && this.client === client) {
        this.replacedElsewhere = true;
        this.stateEmitter.fire(client.state);
      }
    });
    client.on('warning', (error) => this.log.warn(`Dropped a message from the relay: ${safeText(error.message)} (${error.code})`));
    const inbox = new Inbox(client, { trustOf: (peerId, name) => this.trust().verdict(peerId, name), journal: this.journal });
    this.inboxValue = inbox;
    this.inboxEmitter.fire(inbox);
    try {
      await client.connect();
    } catch (error) {
      const e = toSftError(error);
      // Unreachable: the client keeps trying in the background. Refused: it has stopped. Only this
      // attempt's own client is torn down, never one a newer connect() made.
      if (e.code !== 'RELAY_UNREACHABLE' && this.client === client) this.disconnect();
      throw e;
    }
  }

  /** Closes the connection, and makes any connect() still under way give up. */
  disconnect(): void {
    this.generation++;
    this.replacedElsewhere = false; // The user's own choice now, whatever another window did.
    const client = this.client;
    const url = this.connectedUrl;
    this.client = undefined;
    this.connectedUrl = undefined;
    this.inboxValue?.dispose();
    this.inboxValue = undefined;
    if (client) void client.closeGracefully(2000).finally(() => client.removeAllListeners());
    if (client || url) {
      this.stateEmitter.fire('disconnected');
      this.peersEmitter.fire();
    }
  }

  async markVerified(peer: PeerInfo): Promise<void> {
    this.trustBook.markVerified(peer.peerId, peer.name);
    await this.saveTrust();
  }

  private async saveTrust(): Promise<void> {
    // Another window may have saved since this one read the store: keep what it learnt too.
    const stored = this.context.globalState.get<TrustState>(TRUST_STATE_KEY);
    if (stored && typeof stored.peers === 'object' && stored.peers !== null) this.trustBook.merge(stored);
    await this.context.globalState.update(TRUST_STATE_KEY, this.trustBook.snapshot);
    this.trustEmitter.fire();
  }

  dispose(): void {
    this.disconnect();
    this.stateEmitter.dispose();
    this.peersEmitter.dispose();
    this.inboxEmitter.dispose();
    this.trustEmitter.dispose();
    this.connectedEmitter.dispose();
  }
}
