/**
 * The Peers view: who is online on the relay, with a badge for peers whose safety number this user
 * confirmed and a loud one for a name that arrives with a different key. Explorer items dropped on
 * a peer are sent to that peer.
 */
import * as vscode from 'vscode';
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
