/**
 * Start Relay / Stop Relay: the same relay code as `sft-relay`, embedded in this VS Code window.
 * It requires a team token (generated once and kept in SecretStorage, so invites stay valid across
 * restarts, until the user asks for a new one), binds join proofs to the addresses it hands out, and writes its audit trail to the
 * extension's global storage folder.
 */
import crypto from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import * as vscode from 'vscode';
import { createRelay, isLoopbackHost, type Relay } from '../../server/relay';
import { SftError } from '../core/errors';
import { settings } from './settings';
import type { Log } from './log';

const RELAY_TOKEN_KEY = 'sft.embeddedRelay.token.v1';
/** An invite is the relay's address with the team token in the fragment, which never leaves this machine in a request. */
const INVITE_TOKEN = 'token=';

export interface RunningRelay {
  /** Listening on a loopback address only: teammates on other machines cannot connect. */
  readonly localOnly: boolean;
  /** What this window connects to. */
  readonly localUrl: string;
  /** What teammates connect to: one URL per reachable address. */
  readonly inviteUrls: readonly string[];
  /** Every address the relay answers to (join proofs are bound to them): the above and localhost. */
  readonly addresses: readonly string[];
  readonly token: string;
}

export class RelayHost implements vscode.Disposable {
  private relay: Relay | undefined;
  private info: RunningRelay | undefined;
  private readonly changeEmitter = new vscode.EventEmitter<RunningRelay | undefined>();
  readonly onDidChange = this.changeEmitter.event;

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly log: Log,
  ) {}

  get running(): RunningRelay | undefined {
    return this.info;
  }

  /** Starts the relay, or returns the one running or starting (two quick clicks start one relay). */
  start(): Promise<RunningRelay> {
    if (this.info) return Promise.resolve(this.info);
    this.starting ??= this.startOnce().finally(() => (this.starting = undefined));
    return this.starting;
  }
  private starting: Promise<RunningRelay> | undefined;

  private async startOnce(): Promise<RunningRelay> {
    const host = settings.relayHost();
    const port = settings.relayPort() || (await freePort(host).catch((error: unknown) => Promise.reject(listenError(error, host, 0))));
    const token = await this.token();
    const inviteUrls = reachableUrls(host, port);
    const localUrl = `http://${isWildcard(host) || isLoopbackHost(host) ? '127.0.0.1' : bracket(host)}:${port}`;
    const addresses = [...new Set([localUrl, `http://localhost:${port}`, ...inviteUrls])];
    const auditDir = this.context.globalStorageUri.fsPath;
    await vscode.workspace.fs.createDirectory(this.context.globalStorageUri);
    const relay = createRelay({
      host,
      port,
      tokens: [token],
      publicUrls: addresses,
      maxFileSize: settings.relayMaxFileSize() ?? null,
      // Event-loop and GC monitors are per process: the VS Code extension host is not ours to watch.
      processMetrics: false,
      auditLog: path.join(auditDir, 'relay-audit.jsonl'),
      auditMaxBytes: 10 * 2 ** 20,
      auditKeep: 3,
      logger: pino({ level: 'info', base: undefined }, this.logStream()),
    });
    try {
      await relay.start();
    } catch (error) {
      await relay.stop().catch(() => undefined);
      throw listenError(error, host, port);
    }
    this.relay = relay;
    this.info = { localUrl, inviteUrls, addresses, token, localOnly: isLoopbackHost(host) };
    this.log.info(`Relay started on ${host}:${port}; audit log in ${auditDir}.`);
    this.changeEmitter.fire(this.info);
    return this.info;
  }

  async stop(): Promise<void> {
    await this.starting?.catch(() => undefined);
    const relay = this.relay;
    if (!relay) return;
    this.relay = undefined;
    this.info = undefined;
    await relay.stop({ graceMs: 0 });
    this.log.info('Relay stopped.');
    this.changeEmitter.fire(undefined);
  }

  /** Whether `url` reaches the running relay, through any of the addresses it answers to. */
  serves(url: string | undefined): boolean {
    const origin = url === undefined ? undefined : originOf(url);
    return origin !== undefined && this.info !== undefined && this.info.addresses.some((a) => originOf(a) === origin);
  }

  /** Peers joined to the running relay (this window among them, when it is connected to it). */
  peers(): number {
    return this.relay?.stats().peers ?? 0;
  }

  /** The invite teammates paste into "Connect to Relay…". */
  invite(): string | undefined {
    if (!this.info) return undefined;
    return `${this.info.inviteUrls[0] ?? this.info.localUrl}#${INVITE_TOKEN}${this.info.token}`;
  }

  /**
   * A new team token for the embedded relay, so that every invite handed out before stops admitting
   * anyone: kept for the next start and, if the relay runs, in force at once for new connections
   * (teammates already connected stay until they disconnect).
   */
  async rotateToken(): Promise<string> {
    await this.starting?.catch(() => undefined);
    const token = crypto.randomBytes(24).toString('base64url');
    await this.context.secrets.store(RELAY_TOKEN_KEY, token);
    if (this.relay && this.info) {
      await this.relay.reload({ tokens: [token] });
      this.info = { ...this.info, token };
      this.changeEmitter.fire(this.info);
    }
    this.log.info('The embedded relay has a new team token; earlier invites no longer admit anyone.');
    return token;
  }

  private async token(): Promise<string> {
    const stored = await this.context.secrets.get(RELAY_TOKEN_KEY);
    if (stored) return stored;
    const token = crypto.randomBytes(24).toString('base64url');
    await this.context.secrets.store(RELAY_TOKEN_KEY, token);
    return token;
  }

  private logStream(): Writable {
    const log = this.log;
    return new Writable({
      write(chunk: Buffer, _encoding, callback) {
        try {
          const line = JSON.parse(chunk.toString('utf8')) as { level?: number; msg?: string } & Record<string, unknown>;
          const { level = 30, msg = '', time: _time, ...rest } = line;
          const text = `relay: ${msg}${Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : ''}`;
          if (level >= 50) log.error(text);
          else if (level >= 40) log.warn(text);
          else log.info(text);
        } catch {
          log.info(`relay: ${chunk.toString('utf8').trim()}`);
        }
        callback();
      },
    });
  }

  dispose(): void {
    void this.stop();
    this.changeEmitter.dispose();
  }
}

/** Splits a pasted invite ("http://host:7474#token=…") into the address and the token. */
export function parseInvite(text: string): { url: string; token?: string } {
  const trimmed = text.trim();
  const hash = trimmed.indexOf('#');
  const url = hash === -1 ? trimmed : trimmed.slice(0, hash);
  const fragment = hash === -1 ? '' : trimmed.slice(hash + 1);
  const token = fragment.startsWith(INVITE_TOKEN) ? decodeURIComponent(fragment.slice(INVITE_TOKEN.length)) : undefined;
  return token ? { url, token } : { url };
}

const isWildcard = (host: string) => host === '0.0.0.0' || host === '::';
const bracket = (host: string) => (host.includes(':') ? `[${host}]` : host);

/** Addresses teammates can use: every non-internal interface for a wildcard bind, else the one bound. */
function reachableUrls(host: string, port: number): string[] {
  if (!isWildcard(host)) return [`http://${bracket(host)}:${port}`];
  const addresses = Object.values(os.networkInterfaces())
    .flat()
    .filter((a): a is os.NetworkInterfaceInfo => !!a && !a.internal && (host === '::' || a.family === 'IPv4'))
    .sort((a, b) => (a.family === b.family ? 0 : a.family === 'IPv4' ? -1 : 1))
    .map((a) => `http://${bracket(a.address)}:${port}`);
  return addresses.length > 0 ? addresses : [`http://127.0.0.1:${port}`];
}

function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Why the relay could not listen, in the user's terms (the settings to change), with a stable code. */
function listenError(error: unknown, host: string, port: number): unknown {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') return new SftError('IO', `Port ${port} is in use on ${host}. Stop what uses it, or change secureFileTransfer.relay.port (0 picks a free port).`, error);
  if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new SftError('IO', `This machine has no address ${host} (setting secureFileTransfer.relay.host).`, error);
  if (code === 'EACCES') return new SftError('IO', `Listening on port ${port} needs privileges this user does not have: ports below 1024 usually do. Change secureFileTransfer.relay.port (0 picks a free port).`, error);
  return error;
}

function originOf(url: string): string | undefined {
  return URL.canParse(url) ? new URL(url).origin : undefined;
}
