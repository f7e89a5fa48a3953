/**
 * Receiving: each offer becomes a notification naming the sender (and whether they are verified),
 * the files and the total size, with Save…, Save to Downloads and Decline. The offer also waits in
 * the Transfers view, so a dismissed notification loses nothing. Saving shows a cancellable progress
 * notification and ends with Open / Reveal. Every name shown is escaped.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as vscode from 'vscode';
import { SftError, toSftError } from '../core/errors';
import { formatBytes, timeAndRate } from '../core/format';
import { safeText } from './text';
import { shortPeerId } from '../core/crypto/identity';
import type { ExpiredTransfer, Inbox, IncomingOffer, ReceiveResult, ConflictPolicy, ResumedTransfer } from '../core/transfer/receiver';
import { RESUMABLE_CODES, type PeerInfo } from '../core/protocol';
import type { TrustVerdict } from '../core/trust';
import { copyToUri, tooLarge } from './files';
import type { RunTransfer } from './progress';
import { settings } from './settings';
import { describeNames, topLevelNames, type TransferEntry, type Transfers } from './transfers';
import type { Log } from './log';
import { ask } from './prompts';

const SAVE = 'Save…';
const SAVE_FOLDER = 'Save to Folder…';
const SAVE_DOWNLOADS = 'Save to Downloads';
const DECLINE = 'Decline';
const VERIFY = 'Verify…';
const REVEAL = 'Reveal in File Explorer';
/** Notifications for one offer brought back again and again (see Receiver.prompted). */
const MAX_PROMPTS = 3;

export type SaveTarget = 'ask' | 'downloads' | vscode.Uri;

export class Receiver {
  constructor(
    /** The sender's standing now (the user may have verified them since the offer arrived). */
    private readonly verdictOf: (peer: PeerInfo) => TrustVerdict,
    private readonly transfers: Transfers,
    private readonly runTransfer: RunTransfer,
    private readonly log: Log,
  ) {}

  /** Listens to a connection's inbox; the returned disposable stops listening. */
  attach(inbox: Inbox): vscode.Disposable {
    const onOffer = (offer: IncomingOffer) => void this.onOffer(offer).catch((error: unknown) => this.showFailure(error));
    const onRefused = (r: { from: string; error: SftError }) => {
      this.log.warn(`Refused an offer from ${shortPeerId(r.from)}: ${safeText(r.error.message)} (${r.error.code})`);
      void vscode.window.showWarningMessage(`Refused an offer from ${shortPeerId(r.from)}: ${safeText(r.error.message)} (${r.error.code})`);
    };
    const onWithdrawn = (w: { transferId: string; from: string; error: SftError }) => {
      const entry = this.transfers.get(w.transferId);
      if (entry?.status !== 'offer') return;
      this.transfers.update(w.transferId, { status: 'cancelled', error: w.error.toJSON() });
      // A dropped connection (either end's) is not the sender's doing; it will be asked again.
      if (!RESUMABLE_CODES.includes(w.error.code)) void vscode.window.showInformationMessage(`${entry.peerLabel} withdrew the offer of ${describeNames(entry.names)}.`);
    };
    const onResumed = (resumed: ResumedTransfer) => void this.onResumed(resumed);
    const onExpired = (expired: ExpiredTransfer) => {
      const names = expired.files.map((f) => safeText(path.basename(f)));
      const why = expired.error.code === 'EXPIRED' ? 'expired: its sender did not come back in time' : `was called off: ${safeText(expired.error.message)} (${expired.error.code})`;
      // By the name its offer was shown with, when this window listed it (a refused offer, above,
      // never had its sender checked, so it keeps the bare id).
      const label = this.transfers.get(expired.transferId)?.peerLabel ?? shortPeerId(expired.from);
      this.log.warn(`An interrupted transfer from ${label} (${shortPeerId(expired.from)}) ended: ${safeText(expired.error.message)} (${expired.error.code})`);
      void vscode.window.showWarningMessage(`The interrupted transfer of ${describeNames(names)} from ${label} ${why}. Its partial files were removed.`);
    };
    inbox.on('offer', onOffer);
    inbox.on('refused', onRefused);
    inbox.on('withdrawn', onWithdrawn);
    inbox.on('resumed', onResumed);
    inbox.on('expired', onExpired);
    return new vscode.Disposable(() => {
      inbox.off('offer', onOffer);
      inbox.off('refused', onRefused);
      inbox.off('withdrawn', onWithdrawn);
      inbox.off('resumed', onResumed);
      inbox.off('expired', onExpired);
    });
  }

  /** A transfer accepted before VS Code restarted, continuing from its journal: no second prompt. */
  private async onResumed(resumed: ResumedTransfer): Promise<void> {
    const entry = this.transfers.add({
      id: resumed.transferId,
      direction: 'receive',
      peerLabel: safeText(resumed.sender.name),
      names: topLevelNames(resumed.entries.map((e) => e.path)),
      fileCount: resumed.fileCount,
      totalBytes: resumed.totalBytes,
      startedAt: Date.now(),
      status: 'active',
      cancel: () => resumed.cancel(),
      journaled: true,
    });
    try {
      const result = await this.runTransfer(
        { title: `Resuming ${describeNames(entry.names)} from ${entry.peerLabel} (chunk ${resumed.fromChunk} of ${resumed.chunkCount})`, cancel: () => resumed.cancel() },
        (onProgress) => {
          resumed.onProgress = onProgress;
          return resumed.result;
        },
      );
      this.transfers.update(entry.id, { status: 'done', savedTo: result.files.map((f) => f.savedAs) });
      void this.announce(entry, result);
    } catch (error) {
      const e = toSftError(error);
      this.transfers.fail(entry.id, e);
      if (e.code !== 'CANCELLED') this.showFailure(e);
    }
  }

  /**
   * How often each offer was put in front of the user. An offer taken down by a dropped connection
   * comes back when both ends are back; a relay that keeps cutting the connection could bring it
   * back without end, each time with a notification. After MAX_PROMPTS it is only listed again.
   */
  private readonly prompted = new Map<string, number>();

  private async onOffer(offer: IncomingOffer): Promise<void> {
    const sender = safeText(offer.sender.name);
    const names = topLevelNames(offer.entries.map((e) => e.path));
    const times = (this.prompted.get(offer.transferId) ?? 0) + 1;
    if (this.prompted.size >= 1000 && !this.prompted.has(offer.transferId)) this.prompted.clear();
    this.prompted.set(offer.transferId, times);
    const entry = this.transfers.add({
      id: offer.transferId,
      direction: 'receive',
      peerLabel: sender,
      names,
      fileCount: offer.fileCount,
      totalBytes: offer.totalBytes,
      startedAt: Date.now(),
      status: 'offer',
      offer,
    });
    const what = `${describeNames(names)} (${offer.fileCount === 1 ? '' : `${offer.fileCount} files, `}${formatBytes(offer.totalBytes)})`;
    if (times > MAX_PROMPTS) {
      this.log.info(`The offer of ${what} from ${sender} is back (${times} times); listed in Transfers without a notification.`);
      void vscode.window.setStatusBarMessage(`Secure Transfer: the offer from ${sender} is back in Transfers.`, 5000);
      return;
    }
    const single = isSingleFile(offer);
    if (offer.senderTrust === 'changed') {
      const choice = await ask(
        'warning',
        `KEY CHANGED: ${sender} wants to send you ${what}, but this name belongs to a different key (the one first met with it, or the one you verified). It may be someone else, or a relay in the middle.`,
        {},
        VERIFY,
        DECLINE,
      );
      if (choice === VERIFY) await vscode.commands.executeCommand('secureFileTransfer.verifyPeer', offer.sender);
      else if (choice === DECLINE) this.decline(entry);
      // Otherwise the offer waits in the Transfers view, where Save asks again.
      return;
    }
    const badge = offer.senderTrust === 'verified' ? ' (verified)' : ' (not verified)';
    const recipients = offer.recipientCount > 1 ? ` (also sent to ${offer.recipientCount - 1} other${offer.recipientCount > 2 ? 's' : ''})` : '';
    const choice = await ask('info', `${sender}${badge} wants to send you ${what}${recipients}.`, {}, single ? SAVE : SAVE_FOLDER, SAVE_DOWNLOADS, DECLINE);
    if (entry.status !== 'offer') {
      // Withdrawn (or answered from the Transfers view) while the notification was up.
      if (choice && entry.status === 'cancelled') void vscode.window.showInformationMessage(`The offer of ${describeNames(names)} is no longer available: ${safeText(entry.error?.message ?? 'withdrawn')}.`);
      return;
    }
    if (choice === DECLINE) this.decline(entry);
    else if (choice === SAVE || choice === SAVE_FOLDER) await this.save(entry, 'ask').catch((e) => this.showFailure(e));
    else if (choice === SAVE_DOWNLOADS) await this.save(entry, 'downloads').catch((e) => this.showFailure(e));
  }

  decline(entry: TransferEntry): void {
    // An entry replaced since (the sender offered the transfer again) is not this one to answer.
    if (entry.status !== 'offer' || !entry.offer || this.transfers.get(entry.id) !== entry) return;
    try {
      entry.offer.decline();
    } catch (error) {
      // Answered meanwhile (from the Transfers view, or the offer went away): nothing left to decline.
      this.log.info(`Decline of ${entry.id}: ${safeText(toSftError(error).message)}`);
    }
    this.transfers.update(entry.id, { status: 'declined' });
  }

  /**
   * Saves an offer. `ask` opens the save dialog (a folder picker for several files); `downloads` uses
   * the download folder setting; a URI saves there (a file for one file, else a folder).
   */
  async save(entry: TransferEntry, target: SaveTarget): Promise<ReceiveResult | undefined> {
    const offer = entry.offer;
    if (entry.status === 'active' || entry.status === 'done') {
      void vscode.window.showInformationMessage(`${describeNames(entry.names)} is already ${entry.status === 'active' ? 'being saved' : 'saved'}.`);
      return undefined;
    }
    if (entry.status !== 'offer' || !offer) throw new SftError('UNKNOWN_TRANSFER', 'This offer is no longer waiting for an answer.');
    if (this.verdictOf(offer.sender) === 'changed') {
      const ok = await ask(
        'warning',
        `KEY CHANGED: ${entry.peerLabel}'s key is not the one you first met or verified under that name.`,
        { modal: true, detail: 'Accept these files only if you know why the key changed. Comparing safety numbers again (Verify…) removes this warning.' },
        'Accept Anyway',
      );
      if (ok !== 'Accept Anyway') return undefined;
    }
    const single = isSingleFile(offer);
    const destination = await this.destination(entry, offer, single, target);
    if (!destination) return undefined;
    if (entry.status !== 'offer') throw new SftError('UNKNOWN_TRANSFER', `The offer of ${describeNames(entry.names)} was withdrawn.`);

    // Non-file destinations are written whole through VS Code: received into a private folder first.
    const remote = destination.folder.scheme !== 'file';
    if (remote && offer.totalBytes > settings.maxInMemorySize()) throw tooLarge(settings.maxInMemorySize());
    const directory = remote ? await fs.mkdtemp(path.join(os.tmpdir(), 'sft-receive-')) : destination.folder.fsPath;
    const controller = new AbortController();
    entry.offer = undefined;
    // One received into a temporary folder (for a non-file destination) is not journaled: a restart
    // would continue it into that folder, and nothing would copy it on.
    this.transfers.update(entry.id, { status: 'active', cancel: () => controller.abort(), journaled: !remote });
    try {
      if (!remote) await fs.mkdir(directory, { recursive: true });
      const result = await this.runTransfer({ title: `Receiving ${describeNames(entry.names)} from ${entry.peerLabel}`, cancel: () => controller.abort() }, (onProgress) =>
        offer.accept({
          directory,
          // The save dialog's answer is a whole path: the one file written outside `directory` walks.
          ...(destination.saveAs ? { saveAs: path.join(directory, destination.saveAs) } : {}),
          onConflict: destination.onConflict,
          signal: controller.signal,
          journal: !remote,
          onProgress,
        }),
      );
      const saved = remote ? (await copyToUri(result.files.map((f) => f.savedAs), directory, destination.folder, destination.onConflict === 'overwrite')).map((u) => u.toString()) : result.files.map((f) => f.savedAs);
      this.transfers.update(entry.id, { status: 'done', savedTo: saved });
      void this.announce(entry, result);
      return result;
    } catch (error) {
      const e = toSftError(error);
      this.transfers.fail(entry.id, e);
      if (e.code === 'CANCELLED') return undefined;
      throw e;
    } finally {
      if (remote) await fs.rm(directory, { recursive: true, force: true });
    }
  }

  private async destination(entry: TransferEntry, offer: IncomingOffer, single: boolean, target: SaveTarget): Promise<{ folder: vscode.Uri; saveAs?: string; onConflict: ConflictPolicy } | undefined> {
    const downloads = vscode.Uri.file(settings.downloadFolder());
    if (target === 'downloads') return { folder: downloads, onConflict: 'rename' };
    if (target instanceof vscode.Uri) {
      if (!single) return { folder: target, onConflict: 'rename' };
      // One file: a URI names the file to write, unless it is an existing folder.
      const isFolder = await vscode.workspace.fs.stat(target).then((s) => (s.type & vscode.FileType.Directory) !== 0, () => false);
      return isFolder ? { folder: target, onConflict: 'rename' } : { folder: vscode.Uri.joinPath(target, '..'), saveAs: path.posix.basename(target.path), onConflict: 'overwrite' };
    }
    if (single) {
      const name = offer.entries.find((e) => e.type === 'file')!.path;
      // The save dialog asks before replacing a file, so the answer is the user's consent to overwrite.
      const uri = await vscode.window.showSaveDialog({ title: `Save ${entry.names[0]} from ${entry.peerLabel}`, defaultUri: vscode.Uri.joinPath(downloads, name), saveLabel: 'Save' });
      return uri ? { folder: vscode.Uri.joinPath(uri, '..'), saveAs: path.posix.basename(uri.path), onConflict: 'overwrite' } : undefined;
    }
    const picked = await vscode.window.showOpenDialog({ title: `Save ${describeNames(entry.names)} from ${entry.peerLabel} into…`, defaultUri: downloads, canSelectFiles: false, canSelectFolders: true, canSelectMany: false, openLabel: 'Save Here' });
    return picked?.[0] ? { folder: picked[0], onConflict: 'rename' } : undefined;
  }

  private async announce(entry: TransferEntry, result: ReceiveResult): Promise<void> {
    const first = result.files[0]?.savedAs;
    const what = result.files.length === 1 && first ? safeText(path.basename(first)) : `${result.files.length} files`;
    const choice = await vscode.window.showInformationMessage(
      `Saved ${what} (${formatBytes(result.plainBytes)}) from ${entry.peerLabel} ${timeAndRate(result.plainBytes, result.durationMs)}; every chunk verified.`,
      ...(result.files.length === 1 ? ['Open'] : []),
      REVEAL,
    );
    if (choice === 'Open') await openReceived(entry);
    else if (choice === REVEAL) await revealReceived(entry);
  }

  showFailure(error: unknown): void {
    const e = toSftError(error);
    this.log.error(`Receiving failed: ${safeText(e.message)} (${e.code})`);
    void vscode.window.showErrorMessage(`Could not save: ${safeText(e.message)} (${e.code}). Nothing partial was kept.`);
  }
}

function isSingleFile(offer: IncomingOffer): boolean {
  return offer.entries.length === 1 && offer.entries[0]!.type === 'file' && !offer.entries[0]!.path.includes('/');
}

const uriOf = (saved: string) => (/^[a-z][a-z0-9+.-]+:\/\//i.test(saved) ? vscode.Uri.parse(saved, true) : vscode.Uri.file(saved));

export async function openReceived(entry: TransferEntry): Promise<void> {
  const first = entry.savedTo?.[0];
  if (first) await vscode.commands.executeCommand('vscode.open', uriOf(first));
}

export async function revealReceived(entry: TransferEntry): Promise<void> {
  const first = entry.savedTo?.[0];
  if (!first) return;
  const uri = uriOf(first);
  // The OS file manager is not reachable in a remote or browser window: fall back to the Explorer.
  try {
    await vscode.commands.executeCommand('revealFileInOS', uri);
  } catch {
    await vscode.commands.executeCommand('revealInExplorer', uri);
  }
}
