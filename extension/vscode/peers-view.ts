/**
 * The Peers view: who is online on the relay, with a badge for peers whose safety number this user
 * confirmed and a loud one for a name that arrives with a different key. Explorer items dropped on
 * a peer are sent to that peer. Commands that need a peer pick one from the same list (pickPeers).
 */
import * as vscode from 'vscode';
import { SftError } from '../core/errors';
import { fingerprint, shortPeerId } from '../core/crypto/identity';
import { safeText } from './text';
import { peerIdentity, type PeerInfo } from '../core/protocol';
import type { Session } from './session';

export class PeersView implements vscode.TreeDataProvider<PeerInfo>, vscode.TreeDragAndDropController<PeerInfo> {
  private readonly changeEmitter = new vscode.EventEmitter<void>();
  readonly onDidChangeTreeData = this.changeEmitter.event;
  readonly dropMimeTypes = ['text/uri-list'];
  readonly dragMimeTypes: string[] = [];

  constructor(
    private readonly session: Session,
    private readonly sendTo: (uris: vscode.Uri[], peers: PeerInfo[]) => Promise<void>,
  ) {}

  refresh(): void {
    this.changeEmitter.fire();
  }

  getChildren(element?: PeerInfo): PeerInfo[] {
    return element ? [] : this.session.peers;
  }

  getTreeItem(peer: PeerInfo): vscode.TreeItem {
    const verdict = this.session.verdict(peer);
    const item = new vscode.TreeItem(safeText(peer.name));
    item.id = peer.peerId;
    const fp = fingerprint(peerIdentity(peer));
    if (verdict === 'verified') {
      item.description = '✓ verified';
      item.iconPath = new vscode.ThemeIcon('verified-filled', new vscode.ThemeColor('testing.iconPassed'));
    } else if (verdict === 'changed') {
      item.description = '⚠ KEY CHANGED';
      item.iconPath = new vscode.ThemeIcon('warning', new vscode.ThemeColor('problemsWarningIcon.foreground'));
    } else {
      item.description = shortPeerId(peer.peerId);
      item.iconPath = new vscode.ThemeIcon('account');
    }
    // Plain text, not Markdown: nothing a peer chose can be rendered as a link or formatting.
    item.tooltip = [
      safeText(peer.name),
      '',
      `Fingerprint: ${fp}`,
      `Peer id: ${peer.peerId}`,
      '',
      verdict === 'verified'
        ? 'You compared safety numbers with this peer.'
        : verdict === 'changed'
          ? 'KEY CHANGED: this name belongs to a different key (the one first met with it, or the one you verified). It may be someone else, or a relay in the middle. Verify again before sending or accepting files.'
          : 'Not verified: compare safety numbers (Verify…) to be sure who this is.',
    ].join('\n');
    item.contextValue = `peer.${verdict}`;
    return item;
  }

  async handleDrop(target: PeerInfo | undefined, data: vscode.DataTransfer): Promise<void> {
    if (!target) return;
    const list = await data.get('text/uri-list')?.asString();
    if (!list) return;
    const uris = list
      .split(/\r?\n/)
      .map((line) => line.trim())
      .filter((line) => line && !line.startsWith('#'))
      .map((line) => vscode.Uri.parse(line, true));
    if (uris.length > 0) await this.sendTo(uris, [target]);
  }

  dispose(): void {
    this.changeEmitter.dispose();
  }
}

export interface PeerPick {
  readonly title: string;
  /** Lets several be ticked, when there are several to choose from; otherwise one click picks. */
  readonly canPickMany?: boolean;
  /** For a pick of one. */
  readonly placeHolder?: string;
  /** Said when nobody else is online (the pick then comes back undefined); without it, that is a PEER_OFFLINE error. */
  readonly nobodyOnline?: string;
}

/** A quick pick of the peers online, in the Peers view's order; undefined when dismissed. */
export async function pickPeers(session: Session, pick: PeerPick): Promise<PeerInfo[] | undefined> {
  session.requireClient();
  const peers = session.peers;
  if (peers.length === 0) {
    if (pick.nobodyOnline === undefined) throw new SftError('PEER_OFFLINE', 'Nobody else is online on the relay.');
    void vscode.window.showInformationMessage(pick.nobodyOnline);
    return undefined;
  }
  const items = peers.map((peer) => {
    // Standing first: a changed key is what someone choosing whom to verify, or whom to send to, must see.
    const verdict = session.verdict(peer);
    return {
      label: safeText(peer.name),
      description: verdict === 'verified' ? '$(verified-filled) verified' : verdict === 'changed' ? '$(warning) KEY CHANGED' : shortPeerId(peer.peerId),
      detail: verdict === 'changed' ? 'This name belongs to a different key (the one first met with it, or the one you verified): compare safety numbers before sending.' : undefined,
      peer,
    };
  });
  if (pick.canPickMany && items.length > 1) {
    const picked = await vscode.window.showQuickPick(items, { title: pick.title, placeHolder: 'Tick one or more teammates, then press Enter', canPickMany: true, matchOnDescription: true });
    return picked?.map((i) => i.peer);
  }
  const picked = await vscode.window.showQuickPick(items, { title: pick.title, placeHolder: pick.placeHolder, matchOnDescription: true });
  return picked ? [picked.peer] : undefined;
}
