/**
 * The VS Code shell: views, commands, prompts and the status bar around the vscode-free core
 * (extension/core), which does the protocol, the cryptography and the transfers. Every command and
 * listener is registered in `context.subscriptions`, so deactivation releases all of it.
 */
import * as vscode from 'vscode';
import { SftError, toSftError } from '../core/errors';
import { fingerprint, safetyNumber } from '../core/crypto/identity';
import { IDENTITY_SECRET_KEY } from '../core/keystore';
import { safeText } from './text';
import { peerIdentity, type PeerInfo } from '../core/protocol';
import { createLog, type Log } from './log';
import { PeersView, pickPeers } from './peers-view';
import { transferRunner } from './progress';
import { Receiver, openReceived, revealReceived, type SaveTarget } from './receive';
import { RelayHost, parseInvite } from './relay-host';
import { Sender, wasShown, type SendToOptions } from './send';
import { Session } from './session';
import { answerPromptsForTests, ask, type PromptAnswerer } from './prompts';
import { settings } from './settings';
import { StatusBar } from './status-bar';
import { Transfers, TransfersView, type TransferEntry } from './transfers';

/**
 * What activate() returns in the extension-host tests (ExtensionMode.Test) only. Any extension can
 * read another's exports, and these reach the identity's keys, the team tokens and the trust book:
 * outside tests activate() returns nothing.
 */
export interface SecureFileTransferApi {
  readonly session: Session;
  readonly transfers: Transfers;
  readonly relayHost: RelayHost;
  readonly peersView: vscode.TreeDataProvider<PeerInfo> & vscode.TreeDragAndDropController<PeerInfo>;
  readonly transfersView: vscode.TreeDataProvider<TransferEntry>;
  /** To check where secrets went, and to answer prompts. */
  readonly testing: {
    readonly context: vscode.ExtensionContext;
    /** Answers the trust prompts (prompts.ts) instead of showing them, until disposed. */
    readonly answerPrompts: (answer: PromptAnswerer) => vscode.Disposable;
  };
}

/** Kept so deactivate can wait for the embedded relay to close its port and audit log. */
let stopRelay: (() => Promise<void>) | undefined;

export function activate(context: vscode.ExtensionContext): SecureFileTransferApi | undefined {
  const log = createLog();
  const session = new Session(context, log);
  const transfers = new Transfers();
  const relayHost = new RelayHost(context, log);
  stopRelay = () => relayHost.stop();
  const runTransfer = transferRunner(session.onDidChangeState, transfers);
  const sender = new Sender(session, transfers, runTransfer, log);
  const receiver = new Receiver((peer) => session.verdict(peer), transfers, runTransfer, log);
  const peersView = new PeersView(session, (uris, peers) => sender.send(uris, peers).then(() => undefined, (e) => showError(e, log)));
  const statusBar = new StatusBar(session, relayHost);
  const subscriptions = context.subscriptions;
  subscriptions.push(log, session, transfers, relayHost, peersView, statusBar);

  const peersTree = vscode.window.createTreeView('secureFileTransfer.peers', { treeDataProvider: peersView, dragAndDropController: peersView, showCollapseAll: false });
  const transfersView = new TransfersView(transfers);
  const transfersTree = vscode.window.createTreeView('secureFileTransfer.transfers', { treeDataProvider: transfersView });
  subscriptions.push(peersTree, transfersTree);

  // Context keys for `when` clauses, the badge on the activity bar, and the status bar.
  const setContext = (key: string, value: unknown) => void vscode.commands.executeCommand('setContext', `secureFileTransfer.${key}`, value);
  const refresh = () => {
    setContext('connection', session.state);
    setContext('relayRunning', relayHost.running !== undefined);
    peersTree.message = session.state === 'connecting' ? `Connecting to ${session.relayUrl}…` : undefined;
    statusBar.update();
    peersView.refresh();
  };
  const refreshTransfers = () => {
    setContext('hasFinished', transfers.hasFinished);
    const waiting = transfers.list().filter((t) => t.status === 'offer').length;
    transfersTree.badge = waiting > 0 ? { value: waiting, tooltip: `${waiting} offer${waiting === 1 ? '' : 's'} waiting for an answer` } : undefined;
  };
  let inboxListener: vscode.Disposable | undefined;
  // Offers not yet answered cannot be accepted once the connection they came on is gone.
  subscriptions.push(
    session.onDidChangeState(refresh),
    session.onDidChangePeers(refresh),
    session.onDidChangeTrust(() => peersView.refresh()),
    session.onDidCreateInbox((inbox) => {
      inboxListener?.dispose();
      inboxListener = receiver.attach(inbox);
    }),
    new vscode.Disposable(() => inboxListener?.dispose()),
    relayHost.onDidChange(refresh),
    // Transfers interrupted by a restart continue once this window has joined a relay.
    session.onDidJoin(() => void sender.resumeJournaled().catch((e) => showError(e, log))),
    transfers.onDidChange(refreshTransfers),
  );
  refresh();
  refreshTransfers();

  // ---- Commands. Errors become one notification with the stable code; nothing is thrown at VS Code. ----
  const register = (id: string, handler: (...args: never[]) => unknown) =>
    subscriptions.push(
      vscode.commands.registerCommand(`secureFileTransfer.${id}`, async (...args: never[]) => {
        try {
          return await handler(...args);
        } catch (error) {
          showError(error, log);
          return undefined;
        }
      }),
    );

  const connectTo = async (url: string) => {
    const connecting = session.connect(url); // at once: the session says "connecting to url" from here on
    await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'Connecting to the relay…' }, () => connecting);
    const n = session.peers.length;
    void vscode.window.setStatusBarMessage(`Secure Transfer: connected, ${n} ${n === 1 ? 'peer' : 'peers'} online.`, 4000);
  };

  register('connect', async (given?: string) => {
    const input =
      typeof given === 'string'
        ? given
        : await vscode.window.showInputBox({
            title: 'Connect to Relay',
            prompt: 'The relay address, or an invite from a teammate who started one (address#token=…).',
            value: settings.relayUrl() || 'http://127.0.0.1:7474',
            ignoreFocusOut: true,
            validateInput: (text) => (isRelayAddress(parseInvite(text).url) ? undefined : 'Enter an address such as https://relay.example.com'),
          });
    if (!input) return;
    const { url, token } = parseInvite(input);
    // Checked here too: an address can also come from an invite link or another extension.
    if (!isRelayAddress(url)) throw new SftError('USAGE', 'That is not a relay address: use one such as https://relay.example.com.');
    if (!(await confirmIfBusy('Connecting to another relay'))) return;
    // An invite's token replaces the one kept for that relay only if it gets this window in.
    const previousToken = token ? await session.getToken(url) : undefined;
    if (token) await session.setToken(url, token);
    // The address is remembered (for the next start) only once it admits this window, or while it
    // is being retried: a mistyped or refusing relay would otherwise be dialled at every start.
    // Written after connecting, the settings listener sees it is already in use.
    try {
      await connectTo(url);
    } catch (error) {
      const e = toSftError(error);
      if (token && e.code === 'UNAUTHORIZED') await session.setToken(url, previousToken);
      if (e.code === 'RELAY_UNREACHABLE' && session.state === 'connecting') {
        await settings.setRelayUrl(url);
        // The client keeps trying with backoff; the status bar shows when it gets through.
        void vscode.window.showWarningMessage(`Could not reach the relay at ${safeText(new URL(url).host)} yet; retrying in the background.`);
        return;
      }
      if (e.code !== 'UNAUTHORIZED' || typeof given === 'string') throw e;
      // The relay wants a team token: ask for it once, keep it in the OS keychain, try again.
      if (!(await askForToken(url))) return;
      await connectTo(url);
    }
    await settings.setRelayUrl(url);
  });

  const askForToken = async (url: string): Promise<boolean> => {
    const token = await vscode.window.showInputBox({
      title: `Team token for ${new URL(url).host}`,
      prompt: 'The relay admits only holders of a team token. It is stored in your OS keychain (VS Code secret storage), never in settings.',
      password: true,
      ignoreFocusOut: true,
    });
    if (token === undefined) return false;
    await session.setToken(url, token.trim() || undefined);
    return true;
  };

  register('setTeamToken', async () => {
    const url = session.relayUrl ?? settings.relayUrl();
    if (!url) throw new SftError('USAGE', 'Set a relay address first (Connect to Relay…).');
    if (session.state !== 'disconnected' && !(await confirmIfBusy('Changing the team token'))) return;
    if (await askForToken(url)) await connectTo(url);
  });

  /**
   * Closing the connection ends the transfers running on it: say so, and cancel them cleanly (their
   * partial files are removed) rather than leave them waiting for a connection that will not return.
   */
  const confirmIfBusy = async (what: string): Promise<boolean> => {
    const running = transfers.running();
    if (running.length === 0) return true;
    const answer = await vscode.window.showWarningMessage(
      `${what} cancels ${running.length} running transfer${running.length === 1 ? '' : 's'}.`,
      { modal: true },
      'Cancel Transfers and Continue',
    );
    if (answer !== 'Cancel Transfers and Continue') return false;
    for (const t of running) t.cancel?.();
    return true;
  };

  register('disconnect', async () => {
    if (await confirmIfBusy('Disconnecting')) session.disconnect();
  });

  register('startRelay', async () => {
    settings.relayMaxFileSize(); // A bad setting stops here, before anything is asked or cut.
    const onItAlready = session.state !== 'disconnected' && relayHost.serves(session.relayUrl);
    const elsewhere = session.state !== 'disconnected' && !onItAlready ? session.relayUrl : undefined;
    if (elsewhere) {
      const answer = await ask(
        'warning',
        `Start your own relay and move this window to it?`,
        { modal: true, detail: `This window leaves the relay at ${safeText(new URL(elsewhere).host)}: teammates there no longer see you until you connect to it again.` },
        'Start and Switch',
      );
      if (answer !== 'Start and Switch') return;
    }
    const wasRunning = relayHost.running !== undefined;
    const running = await relayHost.start();
    // Running transfers are cut only once the relay is sure to run; a relay started for nothing goes.
    if (elsewhere && !(await confirmIfBusy('Switching to your own relay'))) {
      if (!wasRunning) await relayHost.stop();
      return;
    }
    await session.setToken(running.localUrl, running.token);
    if (!onItAlready) await connectTo(running.localUrl);
    // Not awaited: the command is done when the relay runs, whether or not the message is answered.
    void vscode.window
      .showInformationMessage(
        `Relay running at ${running.inviteUrls[0]}.${running.localOnly ? ' It accepts connections from this machine only; set secureFileTransfer.relay.host to 0.0.0.0 to let teammates on your network in.' : ' Give teammates the invite so they can connect.'}`,
        'Copy Invite',
      )
      .then((choice) => (choice === 'Copy Invite' ? vscode.commands.executeCommand('secureFileTransfer.copyInvite') : undefined));
    // Nothing is returned: any extension can run this command, and the relay's token is a secret.
  });

  register('stopRelay', async () => {
    const running = relayHost.running;
    const mine = session.state === 'connected' && relayHost.serves(session.relayUrl) ? 1 : 0;
    const teammates = relayHost.peers() - mine;
    if (teammates > 0) {
      const answer = await ask(
        'warning',
        `Stop the relay? ${teammates} teammate${teammates === 1 ? ' is' : 's are'} connected to it.`,
        { modal: true, detail: 'They are disconnected, and transfers running through it end.' },
        'Stop Relay',
      );
      if (answer !== 'Stop Relay') return;
    }
    if (running && relayHost.serves(session.relayUrl)) {
      if (!(await confirmIfBusy('Stopping the relay'))) return;
      session.disconnect();
    }
    await relayHost.stop();
  });

  register('rotateRelayToken', async () => {
    const answer = await ask(
      'warning',
      'Make a new team token for your relay?',
      { modal: true, detail: 'Every invite you have shared stops admitting anyone. Teammates already connected stay connected until they disconnect.' },
      'New Token',
    );
    if (answer !== 'New Token') return;
    const token = await relayHost.rotateToken();
    const running = relayHost.running;
    // This window's own reconnections use the new token too.
    if (running) await session.setToken(running.localUrl, token);
    // Not awaited: the command is done once the token is in force.
    void vscode.window
      .showInformationMessage(running ? 'The relay has a new team token. Share the new invite with your teammates.' : 'Your relay gets its new team token when you next start it.', ...(running ? ['Copy Invite'] : []))
      .then((choice) => (choice === 'Copy Invite' ? vscode.commands.executeCommand('secureFileTransfer.copyInvite') : undefined));
  });

  register('copyInvite', async () => {
    const invite = relayHost.invite();
    if (!invite) throw new SftError('USAGE', 'No relay is running in this window. Run "Secure Transfer: Start Relay" first.');
    await vscode.env.clipboard.writeText(invite);
    const link = `${vscode.env.uriScheme}://${context.extension.id}/connect?invite=${encodeURIComponent(invite)}`;
    const localOnly = relayHost.running?.localOnly === true;
    const choice = await (localOnly ? vscode.window.showWarningMessage : vscode.window.showInformationMessage)(
      localOnly
        ? 'Invite copied, but your relay accepts connections from this machine only: teammates on other machines cannot use it. Set secureFileTransfer.relay.host to 0.0.0.0 and start the relay again to let them in.'
        : 'Invite copied. It holds the team token: share it only with teammates, privately. They paste it into "Secure Transfer: Connect to Relay…", or click the invite link.',
      ...(localOnly ? ['Open Setting'] : []),
      'Copy Invite Link',
    );
    if (choice === 'Copy Invite Link') await vscode.env.clipboard.writeText(link);
    if (choice === 'Open Setting') await vscode.commands.executeCommand('workbench.action.openSettings', 'secureFileTransfer.relay.host');
  });

  // A clicked invite link (vscode://…/connect?invite=…): connect only after the user says yes, since
  // anyone can send a link, and the relay it names would see this window's presence and peer id.
  subscriptions.push(
    vscode.window.registerUriHandler({
      handleUri: async (uri) => {
        if (uri.path !== '/connect') return;
        const invite = new URLSearchParams(uri.query).get('invite') ?? '';
        const { url } = parseInvite(invite);
        if (!isRelayAddress(url)) return void vscode.window.showErrorMessage('That invite link is not valid.');
        const answer = await vscode.window.showInformationMessage(`Connect to the relay at ${safeText(new URL(url).host)}?`, { modal: true, detail: 'You opened an invite link. Connect only if a teammate sent it to you.' }, 'Connect');
        if (answer === 'Connect') await vscode.commands.executeCommand('secureFileTransfer.connect', invite);
      },
    }),
  );

  register('showFingerprint', async () => {
    const identity = await session.identity();
    const fp = fingerprint(identity);
    const choice = await vscode.window.showInformationMessage(
      `Your fingerprint: ${fp}`,
      { modal: true, detail: `Peer id: ${identity.peerId}\n\nTeammates see this in the Peers view's tooltip. To verify each other, use "Verify Safety Number…" and compare the numbers on a call or in person.` },
      'Copy',
    );
    if (choice === 'Copy') await vscode.env.clipboard.writeText(fp);
    return fp;
  });

  register('resetIdentity', async () => {
    const ok = await vscode.window.showWarningMessage(
      'Reset your identity?',
      { modal: true, detail: 'Your keys are deleted and new ones are made. Teammates who have met you under your name, verified or not, will see a KEY CHANGED warning until they verify your new key.' },
      'Reset Identity',
    );
    if (ok !== 'Reset Identity' || !(await confirmIfBusy('Resetting your identity'))) return;
    const url = session.relayUrl;
    await session.resetIdentity();
    const identity = await session.identity();
    void vscode.window.showInformationMessage(`New identity created. Fingerprint: ${fingerprint(identity)}`);
    if (url) await connectTo(url);
  });

  register('verifyPeer', async (given?: PeerInfo) => {
    const peer = given ?? (await pickPeers(session, { title: 'Verify whose safety number?' }))?.[0];
    if (!peer) return;
    const identity = await session.identity();
    const number = safetyNumber(identity, peerIdentity(peer));
    const verdict = session.verdict(peer);
    const choice = await ask(
      'info',
      `Safety number with ${safeText(peer.name)}`,
      {
        modal: true,
        detail: `${number}\n\nRead these digits to each other on a call or in person. If they match, nobody sits between you.${verdict === 'changed' ? '\n\nKEY CHANGED: this name was first met, or verified, with a different key. If the numbers match, this key takes the name from now on.' : ''}\n\nTheir fingerprint: ${fingerprint(peerIdentity(peer))}`,
      },
      'They Match',
    );
    if (choice === 'They Match') {
      await session.markVerified(peer);
      void vscode.window.showInformationMessage(`${safeText(peer.name)} is verified.`);
    }
  });

  register('sendTo', (uri?: unknown, uris?: unknown, options?: SendToOptions) => sender.sendToCommand(uri, uris, options));
  register('sendFileToPeer', (peer?: PeerInfo) => sender.sendToPeerCommand(peer));

  const entryOf = (arg: TransferEntry | string | undefined): TransferEntry => {
    const entry = typeof arg === 'string' ? transfers.get(arg) : arg && transfers.get(arg.id);
    if (!entry) throw new SftError('UNKNOWN_TRANSFER', 'That transfer is no longer listed.');
    return entry;
  };
  register('saveOffer', (arg?: TransferEntry | string, target?: vscode.Uri) => receiver.save(entryOf(arg), target instanceof vscode.Uri ? target : ('ask' satisfies SaveTarget)));
  register('saveOfferToDownloads', (arg?: TransferEntry | string) => receiver.save(entryOf(arg), 'downloads'));
  register('declineOffer', (arg?: TransferEntry | string) => receiver.decline(entryOf(arg)));
  register('cancelTransfer', (arg?: TransferEntry | string) => entryOf(arg).cancel?.());
  register('retryTransfer', async (arg?: TransferEntry | string) => {
    const entry = entryOf(arg);
    if (!entry.sources || !entry.recipients) throw new SftError('USAGE', 'Only sent transfers can be retried.');
    await sender.retry(entry.sources, entry.recipients);
  });
  register('openReceived', (arg?: TransferEntry | string) => openReceived(entryOf(arg)));
  register('revealReceived', (arg?: TransferEntry | string) => revealReceived(entryOf(arg)));
  register('clearFinished', () => transfers.clearFinished());

  register('showLog', () => log.show());

  register('showStatusActions', async () => {
    type Action = vscode.QuickPickItem & { command?: string; args?: unknown[] };
    const actions: Action[] = [];
    // Another window (or sft) took this identity's connection: one click takes it back, to the same relay.
    const takeBack = session.replacedElsewhere ? (session.relayUrl ?? settings.relayUrl()) : undefined;
    if (takeBack && isRelayAddress(takeBack) && session.state !== 'connected') actions.push({ label: '$(plug) Connect This Window Again', description: safeText(new URL(takeBack).host), command: 'secureFileTransfer.connect', args: [takeBack] });
    if (session.state === 'connected') actions.push({ label: '$(send) Send to…', command: 'secureFileTransfer.sendTo' }, { label: '$(shield) Verify Safety Number…', command: 'secureFileTransfer.verifyPeer' });
    if (session.state !== 'connected') actions.push({ label: '$(plug) Connect to Relay…', command: 'secureFileTransfer.connect' });
    if (session.state !== 'disconnected') actions.push({ label: '$(debug-disconnect) Disconnect', command: 'secureFileTransfer.disconnect' });
    if (relayHost.running) actions.push({ label: '$(copy) Copy Relay Invite', command: 'secureFileTransfer.copyInvite' }, { label: '$(debug-stop) Stop Relay', command: 'secureFileTransfer.stopRelay' });
    else actions.push({ label: '$(server-process) Start Relay', command: 'secureFileTransfer.startRelay' });
    actions.push({ label: '$(key) Show My Fingerprint', command: 'secureFileTransfer.showFingerprint' }, { label: '$(output) Show Log', command: 'secureFileTransfer.showLog' });
    const picked = await vscode.window.showQuickPick(actions, { title: `Secure Transfer: ${session.state}${session.relayUrl ? ` (${session.relayUrl})` : ''}` });
    if (picked?.command) await vscode.commands.executeCommand(picked.command, ...(picked.args ?? []));
  });

  /** An invite pasted straight into the relayUrl setting: the token moves to SecretStorage. */
  const moveInviteTokenOutOfSettings = async (): Promise<string> => {
    const { url, token } = parseInvite(settings.relayUrl());
    if (!token) return url;
    await session.setToken(url, token);
    await settings.setRelayUrl(url);
    log.info('Moved the team token from the relayUrl setting to secret storage.');
    return url;
  };
  const quietConnect = (url: string) =>
    session.connect(url).catch((error) => {
      const e = toSftError(error);
      // Unreachable is not worth a notification: the client keeps retrying. Superseded is not an error.
      if (e.code === 'RELAY_UNREACHABLE') log.info(`${e.message} Retrying in the background.`);
      else if (e.code !== 'CANCELLED') showError(e, log);
    });

  // Settings that change the connection reconnect it (not while transfers run: they would be cut).
  subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (!settings.affects(event, 'relayUrl') && !settings.affects(event, 'displayName')) return;
      const url = await moveInviteTokenOutOfSettings().catch((error: unknown) => {
        showError(error, log);
        return undefined;
      });
      // These settings are global, so every window hears the change, and all share one identity,
      // which a relay lets only one connection hold. Only the window the user is in follows it;
      // the others keep their connection until they connect again.
      if (!vscode.window.state.focused) return;
      const busy = transfers.running().length > 0;
      if (settings.affects(event, 'relayUrl')) {
        // The Connect command writes the setting for a connection it already started.
        if (!url || url === session.relayUrl || !settings.autoConnect() || busy) return;
        void quietConnect(url);
      } else if (session.relayUrl && session.state !== 'disconnected') {
        if (busy) log.info('The new display name takes effect at the next connection (transfers are running).');
        else void quietConnect(session.relayUrl);
      }
    }),
  );

  // The identity changed in another window (Reset My Identity there, or a first run at the same
  // time): this window connects again with the stored one, so teammates see one key, not two.
  subscriptions.push(
    context.secrets.onDidChange(async (event) => {
      if (event.key !== IDENTITY_SECRET_KEY || !(await session.identityChangedElsewhere())) return;
      if (session.state === 'disconnected' || !session.relayUrl) return;
      if (transfers.running().length > 0) log.info('The identity changed in another window; this window uses it from its next connection (transfers are running).');
      else void quietConnect(session.relayUrl);
    }),
  );

  // An invite pasted into the setting: its token goes to secret storage at once, connecting or not.
  if (settings.relayUrl()) {
    void moveInviteTokenOutOfSettings().then(
      (url) => (settings.autoConnect() ? quietConnect(url) : undefined),
      (error: unknown) => showError(error, log),
    );
  }

  if (context.extensionMode !== vscode.ExtensionMode.Test) return undefined;
  return { session, transfers, relayHost, peersView, transfersView, testing: { context, answerPrompts: answerPromptsForTests } };
}

export async function deactivate(): Promise<void> {
  // Everything else is in context.subscriptions, which VS Code disposes after this.
  await stopRelay?.();
  stopRelay = undefined;
}

/** An http(s) or ws(s) URL: what a relay address may be. */
function isRelayAddress(url: string): boolean {
  return URL.canParse(url) && /^(https?|wss?):$/.test(new URL(url).protocol);
}

function showError(error: unknown, log: Log): void {
  if (wasShown(error)) return;
  const e = toSftError(error);
  log.error(`${e.message} (${e.code})${e.detail instanceof Error ? `: ${e.detail.message}` : ''}`);
  // An unexpected failure says little by itself: its cause is in the log.
  if (e.code === 'INTERNAL') {
    void vscode.window.showErrorMessage(`${safeText(e.message)} (${e.code})`, 'Show Log').then((choice) => (choice ? log.show() : undefined));
  } else {
    void vscode.window.showErrorMessage(`${safeText(e.message)} (${e.code})`);
  }
}
