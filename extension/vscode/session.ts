/**
 * This window's link to a relay: the identity (from SecretStorage), the team token (SecretStorage,
 * one per relay origin), the trust book (global state; public key hashes, no secrets), and one
 * RelayClient with its Inbox. Everything visible (views, status bar, prompts) listens to it.
 */
import * as vscode from 'vscode';
import { RelayClient, type ConnectionState } from '../core/client';
import { SftError, toSftError } from '../core/errors';
import { loadOrCreateIdentity, IDENTITY_SECRET_KEY } from '../core/keystore';
import { TrustBook, type TrustState, type TrustVerdict } from '../core/trust';
import { Inbox } from '../core/transfer/receiver';
import type { Identity } from '../core/crypto/identity';
import type { PeerInfo } from '../core/protocol';
import { originOf } from '../core/crypto/envelope';
import { settings } from './settings';
import type { Log } from './log';

const TRUST_STATE_KEY = 'sft.trust.v1';
const tokenKey = (url: string) => `sft.teamToken.v1:${originOf(url)}`;

export class Session implements vscode.Disposable {
  private client: RelayClient | undefined;
  private inboxValue: Inbox | undefined;
  private identityValue: Identity | undefined;
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

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly log: Log,
  ) {
    const stored = context.globalState.get<TrustState>(TRUST_STATE_KEY);
    this.trustBook = new TrustBook(stored && typeof stored.peers === 'object' && stored.peers !== null ? stored : { peers: {} });
  }

  get state(): ConnectionState {
    return this.client?.state ?? 'disconnected';
  }

  /** The relay this window is connected (or connecting) to. */
  get relayUrl(): string | undefined {
    return this.client ? this.connectedUrl : undefined;
  }
  private connectedUrl: string | undefined;

  get peers(): PeerInfo[] {
    return [...(this.client?.peers.values() ?? [])].sort((a, b) => a.name.localeCompare(b.name) || a.peerId.localeCompare(b.peerId));
  }

  get inbox(): Inbox | undefined {
    return this.inboxValue;
  }

  get trust(): TrustBook {
    return this.trustBook;
  }

  verdict(peer: PeerInfo): TrustVerdict {
    return this.trustBook.verdict(peer.peerId, peer.name);
  }

  /** The connected client, or a clear error saying what to do. */
  requireClient(): RelayClient {
    if (!this.client || this.client.state !== 'connected') throw new SftError('NOT_JOINED', 'Not connected to a relay. Run "Secure Transfer: Connect to Relay…" first.');
    return this.client;
  }

  /** Loads this user's keys from SecretStorage, creating them on first use. */
  async identity(): Promise<Identity> {
    if (!this.identityValue) {
      const { identity, created } = await loadOrCreateIdentity(this.context.secrets);
      if (created) this.log.info(`Created a new identity (peer id ${identity.peerId}); its keys are in VS Code's secret storage.`);
      this.identityValue = identity;
    }
    return this.identityValue;
  }

  /** Forgets this user's keys: a new identity is made on the next connection. */
  async resetIdentity(): Promise<void> {
    this.disconnect();
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
   * client reconnects by itself, with backoff; transfers under way resume.
   */
  async connect(url: string): Promise<void> {
    this.disconnect();
    const identity = await this.identity();
    const token = await this.getToken(url);
    const client = new RelayClient({ url, identity, name: settings.displayName(), reconnect: true, ...(token ? { token } : {}) });
    this.client = client;
    this.connectedUrl = url;
    client.on('state', (state) => {
      if (this.client !== client) return;
      this.log.info(`Relay ${url}: ${state}.`);
      this.stateEmitter.fire(state);
    });
    client.on('peers', () => {
      if (this.client !== client) return;
      let changed = false;
      // Trust on first use: remember every peer met, so a later key change is noticed.
      for (const peer of client.peers.values()) changed = this.trustBook.remember(peer.peerId, peer.name) || changed;
      if (changed) void this.saveTrust();
      this.peersEmitter.fire();
    });
    client.on('notice', (notice) => this.log.warn(`Relay says: ${notice.message} (${notice.code})`));
    client.on('warning', (error) => this.log.warn(`Dropped a message from the relay: ${error.message} (${error.code})`));
    const inbox = new Inbox(client, { trustOf: (peerId, name) => this.trustBook.verdict(peerId, name) });
    this.inboxValue = inbox;
    this.inboxEmitter.fire(inbox);
    this.stateEmitter.fire('connecting');
    try {
      await client.connect();
    } catch (error) {
      const e = toSftError(error);
      // Unreachable: the client keeps trying in the background. Refused: it has stopped.
      if (e.code !== 'RELAY_UNREACHABLE') this.disconnect();
      throw e;
    }
  }

  disconnect(): void {
    const client = this.client;
    if (!client) return;
    this.client = undefined;
    this.connectedUrl = undefined;
    this.inboxValue?.dispose();
    this.inboxValue = undefined;
    void client.closeGracefully(2000).finally(() => client.removeAllListeners());
    this.stateEmitter.fire('disconnected');
    this.peersEmitter.fire();
  }

  async markVerified(peer: PeerInfo): Promise<void> {
    this.trustBook.markVerified(peer.peerId, peer.name);
    await this.saveTrust();
  }

  private async saveTrust(): Promise<void> {
    await this.context.globalState.update(TRUST_STATE_KEY, this.trustBook.snapshot);
    this.trustEmitter.fire();
  }

  dispose(): void {
    this.disconnect();
    this.stateEmitter.dispose();
    this.peersEmitter.dispose();
    this.inboxEmitter.dispose();
    this.trustEmitter.dispose();
  }
}
