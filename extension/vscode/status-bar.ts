/** The status-bar item: connection state, peers online, whether this window runs the relay. */
import * as vscode from 'vscode';
import type { Session } from './session';
import type { RelayHost } from './relay-host';

export class StatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('secureFileTransfer.status', vscode.StatusBarAlignment.Left, 10);

  constructor(
    private readonly session: Session,
    private readonly relayHost: RelayHost,
  ) {
    this.item.name = 'Secure File Transfer';
    this.item.command = 'secureFileTransfer.showStatusActions';
    this.update();
    this.item.show();
  }

  update(): void {
    const relay = this.relayHost.running ? ' $(server-process)' : '';
    const relayNote = this.relayHost.running ? `\n\nThis window runs a relay (${this.relayHost.running.inviteUrls.join(', ')}).` : '';
    switch (this.session.state) {
      case 'connected': {
        const n = this.session.peers.length;
        this.item.text = `$(lock) ${n} ${n === 1 ? 'peer' : 'peers'}${relay}`;
        this.item.tooltip = `Secure Transfer: connected to ${this.session.relayUrl}, ${n} ${n === 1 ? 'peer' : 'peers'} online.${relayNote}`;
        this.item.backgroundColor = undefined;
        break;
      }
      case 'connecting':
        this.item.text = `$(sync~spin) Secure Transfer${relay}`;
        this.item.tooltip = `Secure Transfer: connecting to ${this.session.relayUrl ?? 'the relay'}…${relayNote}`;
        this.item.backgroundColor = undefined;
        break;
      case 'disconnected':
        this.item.text = `$(debug-disconnect) Secure Transfer${this.session.replacedElsewhere ? ': in another window' : ''}${relay}`;
        this.item.tooltip = this.session.replacedElsewhere
          ? `Secure Transfer: another VS Code window (or sft with the same keys) connected with your identity, and a relay keeps one connection per identity. Click to connect this window instead.${relayNote}`
          : `Secure Transfer: not connected. Click to connect or start a relay.${relayNote}`;
        this.item.backgroundColor = undefined;
        break;
    }
  }

  dispose(): void {
    this.item.dispose();
  }
}
