/**
 * The transfers this window knows about (offers waiting for an answer, transfers under way, and the
 * most recent finished ones) and the Transfers view that lists them. Names shown here came from a
 * peer and are escaped before they reach the UI.
 */
import * as vscode from 'vscode';
import type { ErrorCode, SftError } from '../core/errors';
import { formatBytes, formatRate, formatDuration, type Progress } from '../core/format';
import { safeText } from './text';
import type { PeerInfo } from '../core/protocol';
import type { IncomingOffer } from '../core/transfer/receiver';

export type TransferStatus = 'offer' | 'waiting' | 'active' | 'done' | 'declined' | 'failed' | 'cancelled';

export interface TransferEntry {
  readonly id: string;
  readonly direction: 'send' | 'receive';
  /** The other side(s), as shown (already escaped). */
  readonly peerLabel: string;
  /** File and folder names, as shown (already escaped). */
  readonly names: readonly string[];
  readonly fileCount: number;
  readonly totalBytes: number;
  readonly startedAt: number;
  status: TransferStatus;
  progress?: Progress;
  finishedAt?: number;
  error?: { readonly code: ErrorCode; readonly message: string };
  /** Receive: where the files were saved. */
  savedTo?: readonly string[];
  /** Send: what was sent and to whom, for Retry. */
  readonly sources?: readonly vscode.Uri[];
  readonly recipients?: readonly PeerInfo[];
  /** Receive: the offer while it waits for an answer. */
  offer?: IncomingOffer;
  /** Stops the transfer while it is under way. */
  cancel?: () => void;
  /**
   * Kept in a journal (core/transfer/journal.ts): when the window closes or its extension host
   * restarts, it is left to continue from the journal in the next one, not cancelled.
   */
  journaled?: boolean;
}

const KEEP_FINISHED = 50;
const FINISHED: ReadonlySet<TransferStatus> = new Set(['done', 'declined', 'failed', 'cancelled']);

export class Transfers implements vscode.Disposable {
  private readonly entries = new Map<string, TransferEntry>();
  private readonly changeEmitter = new vscode.EventEmitter<TransferEntry | undefined>();
  readonly onDidChange = this.changeEmitter.event;
  private readonly dirty = new Set<string>();
  private flushTimer: NodeJS.Timeout | undefined;

  list(): TransferEntry[] {
    const rank = (e: TransferEntry) => (e.status === 'offer' ? 0 : FINISHED.has(e.status) ? 2 : 1);
    return [...this.entries.values()].sort((a, b) => rank(a) - rank(b) || (b.finishedAt ?? b.startedAt) - (a.finishedAt ?? a.startedAt));
  }

  get(id: string): TransferEntry | undefined {
    return this.entries.get(id);
  }

  /** Transfers under way (waiting for an answer or moving bytes). */
  running(): TransferEntry[] {
    return [...this.entries.values()].filter((e) => e.status === 'active' || e.status === 'waiting');
  }

  /** Records how a transfer ended on an error: cancelled, or failed with its code. */
  fail(id: string, error: SftError): void {
    this.update(id, { status: error.code === 'CANCELLED' ? 'cancelled' : 'failed', error: error.toJSON() });
  }

  get hasFinished(): boolean {
    return [...this.entries.values()].some((e) => FINISHED.has(e.status));
  }

  add(entry: TransferEntry): TransferEntry {
    this.entries.set(entry.id, entry);
    this.changeEmitter.fire(undefined);
    return entry;
  }

  update(id: string, change: Partial<Omit<TransferEntry, 'id' | 'direction'>>): void {
    const entry = this.entries.get(id);
    if (!entry) return;
    Object.assign(entry, change);
    if (change.status && FINISHED.has(change.status)) {
      entry.finishedAt = Date.now();
      entry.offer = undefined;
      entry.cancel = undefined;
      this.prune();
      this.changeEmitter.fire(undefined);
    } else {
      this.changeEmitter.fire(entry);
    }
  }

  /** Progress arrives up to ten times a second; the view is redrawn at most twice a second. */
  progress(id: string, progress: Progress): void {
    const entry = this.entries.get(id);
    if (!entry) return;
    entry.progress = progress;
    if (entry.status === 'waiting') entry.status = 'active';
    this.dirty.add(id);
    this.flushTimer ??= setTimeout(() => {
      this.flushTimer = undefined;
      for (const dirtyId of this.dirty) {
        const e = this.entries.get(dirtyId);
        if (e) this.changeEmitter.fire(e);
      }
      this.dirty.clear();
    }, 500);
  }

  clearFinished(): void {
    for (const [id, e] of this.entries) if (FINISHED.has(e.status)) this.entries.delete(id);
    this.changeEmitter.fire(undefined);
  }

  private prune(): void {
    const finished = [...this.entries.values()].filter((e) => FINISHED.has(e.status)).sort((a, b) => (b.finishedAt ?? 0) - (a.finishedAt ?? 0));
    for (const old of finished.slice(KEEP_FINISHED)) this.entries.delete(old.id);
  }

  dispose(): void {
    // VS Code is closing the window (or restarting its extension host): stop what runs, so partial
    // files are removed and peers are told; except journaled transfers, which the next extension
    // host continues (cancelling them would tell the peer CANCELLED and remove the journal).
    for (const entry of this.entries.values()) if (!entry.journaled) entry.cancel?.();
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.changeEmitter.dispose();
  }
}

/** "report.pdf", "report.pdf and 3 more", "photos/" */
export function describeNames(names: readonly string[]): string {
  if (names.length === 0) return '(nothing)';
  return names.length === 1 ? names[0]! : `${names[0]} and ${names.length - 1} more`;
}

/** The top-level names of an offer (folders once, with a slash), escaped for display. */
export function topLevelNames(paths: readonly string[]): string[] {
  const seen = new Set<string>();
  for (const p of paths) {
    const slash = p.indexOf('/');
    seen.add(safeText(slash === -1 ? p : `${p.slice(0, slash)}/`));
  }
  return [...seen];
}

export class TransfersView implements vscode.TreeDataProvider<TransferEntry> {
  readonly onDidChangeTreeData: vscode.Event<TransferEntry | undefined>;

  constructor(private readonly transfers: Transfers) {
    this.onDidChangeTreeData = transfers.onDidChange;
  }

  getChildren(element?: TransferEntry): TransferEntry[] {
    return element ? [] : this.transfers.list();
  }

  getTreeItem(entry: TransferEntry): vscode.TreeItem {
    const arrow = entry.direction === 'send' ? '↑' : '↓';
    const item = new vscode.TreeItem(`${arrow} ${describeNames(entry.names)}`);
    item.id = entry.id;
    item.description = describeStatus(entry);
    item.iconPath = iconOf(entry);
    item.contextValue = contextOf(entry);
    // Plain text, not Markdown: names came from a peer.
    const lines = [`${entry.direction === 'send' ? 'To' : 'From'}: ${entry.peerLabel}`, `${entry.fileCount} file(s), ${formatBytes(entry.totalBytes)}`];
    for (const name of entry.names.slice(0, 10)) lines.push(`  ${name}`);
    if (entry.names.length > 10) lines.push(`  … and ${entry.names.length - 10} more`);
    if (entry.error) lines.push('', `${safeText(entry.error.message)} (${entry.error.code})`);
    if (entry.savedTo?.length) lines.push('', `Saved to ${entry.savedTo[0]}${entry.savedTo.length > 1 ? ` and ${entry.savedTo.length - 1} more` : ''}`);
    item.tooltip = lines.join('\n');
    if (entry.status === 'offer') item.command = { command: 'secureFileTransfer.saveOffer', title: 'Save…', arguments: [entry] };
    else if (entry.status === 'done' && entry.savedTo?.length === 1) item.command = { command: 'secureFileTransfer.openReceived', title: 'Open', arguments: [entry] };
    return item;
  }
}

function describeStatus(entry: TransferEntry): string {
  const who = `${entry.direction === 'send' ? 'to' : 'from'} ${entry.peerLabel}`;
  switch (entry.status) {
    case 'offer':
      return `${who} · ${formatBytes(entry.totalBytes)} · waiting for you`;
    case 'waiting':
      return `${who} · ${formatBytes(entry.totalBytes)} · waiting for an answer`;
    case 'active': {
      const p = entry.progress;
      if (!p || p.total === 0) return `${who} · starting`;
      const eta = Number.isFinite(p.eta) && p.eta > 0 ? ` · ${formatDuration(p.eta)} left` : '';
      return `${who} · ${Math.floor((p.bytes / p.total) * 100)}% of ${formatBytes(p.total)} · ${formatRate(p.rate)}${eta}`;
    }
    case 'done':
      return `${who} · ${formatBytes(entry.totalBytes)} · ${entry.direction === 'send' ? 'delivered' : 'saved'}`;
    case 'declined':
      return `${who} · declined`;
    case 'cancelled':
      return `${who} · cancelled`;
    case 'failed':
      return `${who} · failed: ${entry.error?.code ?? 'error'}`;
  }
}

function iconOf(entry: TransferEntry): vscode.ThemeIcon {
  switch (entry.status) {
    case 'offer':
      return new vscode.ThemeIcon('bell-dot', new vscode.ThemeColor('notificationsInfoIcon.foreground'));
    case 'waiting':
      return new vscode.ThemeIcon('watch');
    case 'active':
      return new vscode.ThemeIcon('sync~spin');
    case 'done':
      return new vscode.ThemeIcon('pass', new vscode.ThemeColor('testing.iconPassed'));
    case 'declined':
    case 'cancelled':
      return new vscode.ThemeIcon('circle-slash');
    case 'failed':
      return new vscode.ThemeIcon('error', new vscode.ThemeColor('testing.iconFailed'));
  }
}

/** Context values drive the inline actions in package.json (`viewItem =~ /open/` and so on). */
function contextOf(entry: TransferEntry): string {
  if (entry.status === 'offer') return 'offer';
  if (entry.status === 'waiting' || entry.status === 'active') return 'active';
  const actions = ['finished'];
  if (entry.direction === 'send' && entry.status !== 'done' && entry.sources?.length) actions.push('retry');
  if (entry.direction === 'receive' && entry.status === 'done' && entry.savedTo?.length) actions.push(...(entry.savedTo.length === 1 ? ['open'] : []), 'reveal');
  return actions.join(' ');
}
