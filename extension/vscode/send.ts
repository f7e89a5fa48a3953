/**
 * Sending: "Send to…" from the Explorer, editor tabs, the command palette, the Peers view and drag
 * and drop all end in `send()`, which asks for recipients when none are given, warns about changed
 * keys, and runs the transfer engine under a cancellable progress notification.
 */
import path from 'node:path';
import * as vscode from 'vscode';
import { SftError, toSftError } from '../core/errors';
import { formatBytes, timeAndRate } from '../core/format';
import { safeText } from './text';
import type { PeerInfo } from '../core/protocol';
import { resumeSend, sendFiles, type RecipientOutcome, type SendResult } from '../core/transfer/sender';
import { TransferJournal } from '../core/transfer/journal';
import { toLocalPaths } from './files';
import { pickPeers } from './peers-view';
import type { RunTransfer } from './progress';
import { settings } from './settings';
import type { Session } from './session';
import { describeNames, topLevelNames, type Transfers } from './transfers';
import type { Log } from './log';
import { ask } from './prompts';

/** Trailing argument for scripted use (keybindings, other extensions, tests): who to send to. */
export interface SendToOptions {
  readonly to?: readonly string[];
}

export class Sender {
  constructor(
    private readonly session: Session,
    private readonly transfers: Transfers,
    private readonly runTransfer: RunTransfer,
    private readonly log: Log,
  ) {}

  /**
   * The Send to… command. Menus call it as (uri, uris) from the Explorer, (uri, editorContext) from
   * editor tabs, and with nothing from the palette; scripts may add `{ to: [name or peer id] }`.
   */
  async sendToCommand(uri?: unknown, uris?: unknown, options?: SendToOptions): Promise<SendResult | undefined> {
    const chosen = Array.isArray(uris) && uris.every((u) => u instanceof vscode.Uri) && uris.length > 0 ? (uris as vscode.Uri[]) : uri instanceof vscode.Uri ? [uri] : await this.pickFiles();
    if (!chosen || chosen.length === 0) return undefined;
    if (this.session.state !== 'connected') return this.offerToConnect();
    const client = this.session.requireClient();
    const peers = options?.to ? options.to.map((p) => client.findPeer(p)) : await this.pickRecipients(chosen);
    if (!peers || peers.length === 0) return undefined;
    return this.send(chosen, peers);
  }

  /** From a peer in the Peers view: choose what to send. */
  async sendToPeerCommand(peer: PeerInfo | undefined): Promise<SendResult | undefined> {
    const target = peer ?? (await this.pickRecipients([]))?.[0];
    if (!target) return undefined;
    const chosen = await this.pickFiles(`Send to ${safeText(target.name)}`);
    if (!chosen || chosen.length === 0) return undefined;
    return this.send(chosen, [target]);
  }

  private async offerToConnect(): Promise<undefined> {
    const choice = await vscode.window.showErrorMessage('Not connected to a relay: connect to your team\'s relay, or start one.', 'Connect to Relay…', 'Start Relay');
    if (choice === 'Connect to Relay…') await vscode.commands.executeCommand('secureFileTransfer.connect');
    else if (choice === 'Start Relay') await vscode.commands.executeCommand('secureFileTransfer.startRelay');
    return undefined;
  }

  /** From the palette or a peer: the active file, or files and folders chosen in a dialog. */
  private async pickFiles(title = 'Send to…'): Promise<vscode.Uri[] | undefined> {
    const active = vscode.window.activeTextEditor?.document.uri;
    const choose = () => vscode.window.showOpenDialog({ title, canSelectFiles: true, canSelectFolders: true, canSelectMany: true, openLabel: 'Send' });
    if (!active || active.scheme === 'untitled') return choose();
    const picked = await vscode.window.showQuickPick(
      [
        { label: `$(file) ${safeText(path.posix.basename(active.path))}`, description: 'the active editor', uris: [active] },
        { label: '$(folder-opened) Choose files or folders…', uris: undefined },
      ],
      { title },
    );
    if (!picked) return undefined;
    return picked.uris ?? choose();
  }

  /** A file open with unsaved changes would go out as it is on disk: ask which version to send. */
  private async saveDirty(uris: readonly vscode.Uri[]): Promise<boolean> {
    const wanted = new Set(uris.map((u) => u.toString()));
    const dirty = vscode.workspace.textDocuments.filter((d) => d.isDirty && wanted.has(d.uri.toString()));
    if (dirty.length === 0) return true;
    const names = dirty.map((d) => safeText(path.posix.basename(d.uri.path))).join(', ');
    const answer = await vscode.window.showWarningMessage(`${names} ${dirty.length === 1 ? 'has' : 'have'} unsaved changes.`, { modal: true }, 'Save and Send', 'Send Saved Version');
    if (answer === 'Save and Send') return (await Promise.all(dirty.map((d) => d.save()))).every(Boolean);
    return answer === 'Send Saved Version';
  }

  /** For `uris`, or, with none (from a peer), one recipient for files chosen next. */
  private pickRecipients(uris: readonly vscode.Uri[]): Promise<PeerInfo[] | undefined> {
    const what = uris.length === 1 ? safeText(path.posix.basename(uris[0]!.path)) : `${uris.length} items`;
    return pickPeers(this.session, {
      title: uris.length ? `Send ${what} to…` : 'Send to…',
      canPickMany: uris.length > 0,
      placeHolder: 'Choose a teammate',
      nobodyOnline: 'Nobody else is online on the relay. Teammates appear in the Peers view when they connect.',
    });
  }

  /** Sends `uris` to `peers`, with a progress notification; resolves with the engine's result. */
  async send(uris: readonly vscode.Uri[], peers: readonly PeerInfo[]): Promise<SendResult | undefined> {
    const client = this.session.requireClient();
    if (!(await this.saveDirty(uris))) return undefined;
    for (const peer of peers) {
      if (this.session.verdict(peer) !== 'changed') continue;
      // Pinned keys: a changed key needs an explicit yes each time, until verified again.
      const answer = await ask(
        'warning',
        `KEY CHANGED: "${safeText(peer.name)}" is not the key you first met or verified under that name.`,
        { modal: true, detail: 'This may be someone else using the name, or a relay in the middle. Compare safety numbers before sending anything sensitive.' },
        'Verify…',
        'Send Anyway',
      );
      if (answer === 'Verify…') {
        await vscode.commands.executeCommand('secureFileTransfer.verifyPeer', peer);
        return undefined;
      }
      if (answer !== 'Send Anyway') return undefined;
    }
    const local = await toLocalPaths(uris, settings.maxInMemorySize());
    const names = topLevelNames(local.paths.map((p) => path.basename(p)));
    const peerLabel = peers.map((p) => safeText(p.name)).join(', ');
    const controller = new AbortController();
    let transferId: string | undefined;
    try {
      const result = await this.runTransfer(
        { title: `Sending ${names.length === 1 ? names[0] : `${names.length} items`} to ${peerLabel}`, waiting: 'waiting for an answer…', cancel: () => controller.abort() },
        (onProgress) =>
          sendFiles(client, {
            paths: local.paths,
            to: peers,
            // Files on disk only: a temporary copy of a virtual file would be gone after a restart.
            ...(local.temporary ? {} : { journal: this.session.journal }),
            signal: controller.signal,
            onOffered: (id, sources) => {
              transferId = id;
              this.transfers.add({
                id,
                direction: 'send',
                peerLabel,
                names,
                fileCount: sources.files.length,
                totalBytes: sources.totalBytes,
                startedAt: Date.now(),
                status: 'waiting',
                sources: [...uris],
                recipients: [...peers],
                cancel: () => controller.abort(),
                // What sendFiles journals: files on disk (to any number of recipients).
                journaled: !local.temporary,
              });
            },
            onProgress,
          }),
      );
      this.report(result, peers, names, controller.signal.aborted);
      return result;
    } catch (error) {
      const e = toSftError(error);
      if (transferId) this.transfers.fail(transferId, e);
      if (e.code === 'CANCELLED') return undefined;
      this.log.error(`Sending to ${peerLabel} failed: ${safeText(e.message)} (${e.code})`);
      void this.offerRetry(`Could not send: ${safeText(e.message)} (${e.code})`, uris, peers);
      throw markShown(e);
    } finally {
      await local.dispose();
    }
  }

  /** `cancelledHere`: the user stopped it (Cancel), so legs it cancelled are no failure to report. */
  private report(result: SendResult, peers: readonly PeerInfo[], names: readonly string[], cancelledHere = false): void {
    const nameOf = (peerId: string) => safeText(peers.find((p) => p.peerId === peerId)?.name ?? peerId);
    const what = names.length === 1 ? names[0]! : `${result.files} files`;
    const delivered = result.recipients.filter((r) => r.outcome === 'done');
    const failed = result.recipients.filter((r): r is Extract<RecipientOutcome, { outcome: 'failed' }> => r.outcome === 'failed');
    const declined = result.recipients.filter((r) => r.outcome === 'declined');
    const cancelled = failed.filter((r) => r.code === 'CANCELLED');
    const status =
      delivered.length > 0 ? 'done' : declined.length === result.recipients.length ? 'declined' : cancelled.length > 0 && cancelled.length + declined.length === result.recipients.length ? 'cancelled' : 'failed';
    const firstFailure = failed[0];
    this.transfers.update(result.transferId, { status, ...(firstFailure && status === 'failed' ? { error: { code: firstFailure.code, message: firstFailure.message } } : {}) });
    if (delivered.length > 0) {
      void vscode.window.showInformationMessage(
        `Delivered ${what} (${formatBytes(result.plainBytes)}) to ${delivered.map((r) => nameOf(r.peerId)).join(', ')} ${timeAndRate(result.plainBytes, result.durationMs)}.`,
      );
    }
    for (const r of declined) void vscode.window.showInformationMessage(`${nameOf(r.peerId)} declined ${what}.`);
    for (const r of failed) {
      if (cancelledHere && r.code === 'CANCELLED') continue;
      this.log.warn(`Not delivered to ${nameOf(r.peerId)}: ${safeText(r.message)} (${r.code})`);
      const peer = peers.find((p) => p.peerId === r.peerId);
      void this.offerRetry(`Not delivered to ${nameOf(r.peerId)}: ${safeText(r.message)} (${r.code})`, this.transfers.get(result.transferId)?.sources ?? [], peer ? [peer] : []);
    }
  }

  private async offerRetry(message: string, uris: readonly vscode.Uri[], peers: readonly PeerInfo[]): Promise<void> {
    const canRetry = uris.length > 0 && peers.length > 0;
    const choice = await vscode.window.showErrorMessage(message, ...(canRetry ? ['Retry'] : []));
    if (choice !== 'Retry') return;
    try {
      await this.retry(uris, peers);
    } catch (error) {
      // Not run as a command, so nothing else would show why the retry did not start.
      const e = toSftError(error);
      if (!wasShown(e)) void vscode.window.showErrorMessage(`Could not send again: ${safeText(e.message)} (${e.code})`);
    }
  }

  /**
   * Continues the transfers this identity was sending when VS Code (or its extension host) stopped,
   * from the journal: each leg from the last chunk its recipient verified, once it is online.
   */
  async resumeJournaled(): Promise<void> {
    const client = this.session.requireClient();
    const graceMs = client.resumeGraceMs;
    for (const record of await this.session.journal.outgoing()) {
      if (TransferJournal.isHeldElsewhere(record) || this.transfers.get(record.transferId)) continue;
      const peers = record.recipients;
      const names = topLevelNames(record.entries.map((e) => e.path));
      const peerLabel = peers.map((p) => safeText(p.name)).join(', ');
      if (TransferJournal.isExpired(record, graceMs)) {
        await this.session.journal.discard(record);
        void vscode.window.showWarningMessage(`The interrupted transfer of ${describeNames(names)} to ${peerLabel} expired while VS Code was closed; send it again if it is still needed.`);
        continue;
      }
      const controller = new AbortController();
      this.transfers.add({
        id: record.transferId,
        direction: 'send',
        peerLabel,
        names,
        fileCount: record.files.length,
        totalBytes: record.files.reduce((sum, f) => sum + f.size, 0),
        startedAt: Date.now(),
        status: 'waiting',
        sources: record.paths.map((p) => vscode.Uri.file(p)),
        recipients: [...peers],
        cancel: () => controller.abort(),
        journaled: true,
      });
      void this.runTransfer({ title: `Resuming ${describeNames(names)} to ${peerLabel}`, waiting: `waiting for ${peerLabel}…`, cancel: () => controller.abort() }, (onProgress, notification) =>
        resumeSend(client, {
          journal: this.session.journal,
          record,
          signal: controller.signal,
          onResumed: (from, of, peerId) => {
            const name = peers.length > 1 ? ` to ${safeText(peers.find((p) => p.peerId === peerId)?.name ?? 'a recipient')}` : '';
            notification.report({ message: `continuing${name} from chunk ${from} of ${of}` });
          },
          onProgress,
        }),
      ).then(
        (result) => this.report(result, peers, names, controller.signal.aborted),
        (error: unknown) => {
          const e = toSftError(error);
          this.transfers.fail(record.transferId, e);
          if (e.code !== 'CANCELLED') void vscode.window.showErrorMessage(`Could not resume ${describeNames(names)} to ${peerLabel}: ${safeText(e.message)} (${e.code})`);
        },
      );
    }
  }

  /** Sends again what a finished transfer sent, to whichever of its recipients are online. */
  async retry(uris: readonly vscode.Uri[], peers: readonly PeerInfo[]): Promise<void> {
    const client = this.session.requireClient();
    const online = peers.filter((p) => client.peers.has(p.peerId)).map((p) => client.peers.get(p.peerId)!);
    if (online.length === 0) throw new SftError('PEER_OFFLINE', `${peers.map((p) => safeText(p.name)).join(', ')} ${peers.length === 1 ? 'is' : 'are'} not online.`);
    // A failure of the transfer itself was shown by send(); one before it started was not.
    await this.send(uris, online).catch((error: unknown) => {
      if (!wasShown(error)) throw error;
    });
  }
}

const SHOWN = Symbol('shown');
/** Marks an error the user has already been shown, so the command wrapper does not show it twice. */
export function markShown(error: SftError): SftError {
  (error as SftError & { [SHOWN]?: boolean })[SHOWN] = true;
  return error;
}
export function wasShown(error: unknown): boolean {
  return (error as { [SHOWN]?: boolean } | undefined)?.[SHOWN] === true;
}
