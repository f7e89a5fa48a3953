/**
 * The extension in a real VS Code, against a real relay process, with a second real client (the
 * same core the command-line client uses, over socket.io-client) playing the teammate. Nothing of
 * VS Code is faked: commands run through the command service, settings through the configuration
 * service, secrets through SecretStorage.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readdirSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'mocha';
import * as vscode from 'vscode';
import { RelayClient } from '../../../extension/core/client';
import { Identity, fingerprint, shortPeerId } from '../../../extension/core/crypto/identity';
import { IDENTITY_SECRET_KEY } from '../../../extension/core/keystore';
import { Inbox, type IncomingOffer } from '../../../extension/core/transfer/receiver';
import { sendFiles, type SendResult } from '../../../extension/core/transfer/sender';
import { peerInfo, type PeerInfo } from '../../../extension/core/protocol';
import type { SecureFileTransferApi } from '../../../extension/vscode/extension';
import type { TransferEntry } from '../../../extension/vscode/transfers';
import { toLocalPaths } from '../../../extension/vscode/files';
import type { Prompt } from '../../../extension/vscode/prompts';
import type { SftError } from '../../../extension/core/errors';
import { TrustBook, type TrustState } from '../../../extension/core/trust';
import { startTapProxy } from '../../../scripts/tap-proxy';
import { suiteContext, type SuiteContext } from './context';
import { MemoryFileSystem } from './memfs';

const EXTENSION_ID = 'secure-file-transfer.secure-file-transfer';

async function waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}.`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function sha256(file: string): Promise<string> {
  return crypto.createHash('sha256').update(await fs.readFile(file)).digest('hex');
}

async function randomFile(file: string, bytes: number): Promise<string> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, crypto.randomBytes(bytes));
  return file;
}

/** A teammate: a real client of the same relay, with an inbox. */
async function teammate(ctx: Pick<SuiteContext, 'relayUrl' | 'token'>, name: string): Promise<{ client: RelayClient; inbox: Inbox; info: PeerInfo }> {
  const identity = Identity.generate();
  const client = new RelayClient({ url: ctx.relayUrl, identity, name, token: ctx.token, reconnect: false });
  await client.connect();
  const inbox = new Inbox(client);
  return { client, inbox, info: peerInfo(identity, name) };
}

const nextOffer = (inbox: Inbox) => new Promise<IncomingOffer>((resolve) => inbox.once('offer', resolve));

/** Answers the extension's trust prompts (test mode only) and records them, until disposed. */
function answerPrompts(api: SecureFileTransferApi, answer: (prompt: Prompt) => string | undefined): { seen: Prompt[]; dispose(): void } {
  const seen: Prompt[] = [];
  const registration = api.testing!.answerPrompts((prompt) => {
    seen.push(prompt);
    return answer(prompt);
  });
  return { seen, dispose: () => registration.dispose() };
}

/** How a one-recipient send ended, as the sender sees it. */
function outcomeCode(outcome: SendResult | SftError): string {
  if (outcome instanceof Error) return outcome.code;
  const r = outcome.recipients[0]!;
  return r.outcome === 'failed' ? r.code : r.outcome;
}

export function registerExtensionTests(): void {
  describe('Secure File Transfer in VS Code', function () {
    let ctx: SuiteContext;
    let api: SecureFileTransferApi;
    let bob: Awaited<ReturnType<typeof teammate>>;
    const cleanup: Array<() => unknown> = [];

    before(async function () {
      ctx = suiteContext();
      const extension = vscode.extensions.getExtension<SecureFileTransferApi>(EXTENSION_ID);
      assert.ok(extension, `extension ${EXTENSION_ID} is installed`);
      // Tests start before onStartupFinished: activate explicitly.
      api = await extension.activate();
    });

    after(async function () {
      for (const step of cleanup.reverse()) await step();
    });

    it('activates in test mode and registers every contributed command', async function () {
      const extension = vscode.extensions.getExtension(EXTENSION_ID)!;
      assert.equal(extension.isActive, true);
      assert.ok(api.testing, 'activate() exposes the context in test mode');
      const contributed = (extension.packageJSON.contributes.commands as Array<{ command: string }>).map((c) => c.command);
      assert.ok(contributed.length >= 15);
      const registered = new Set(await vscode.commands.getCommands(true));
      assert.deepEqual(contributed.filter((c) => !registered.has(c)), [], 'every contributed command has a handler');
    });

    it('starts disconnected: no relay URL is configured', function () {
      assert.equal(vscode.workspace.getConfiguration('secureFileTransfer').get('relayUrl'), '');
      assert.equal(api.session.state, 'disconnected');
      assert.deepEqual(api.peersView.getChildren(undefined), []);
    });

    it('refuses an address that is not a relay\'s (from an invite link or another extension): nothing is stored', async function () {
      await vscode.commands.executeCommand('secureFileTransfer.connect', 'file:///etc/passwd#token=stolen');
      await vscode.commands.executeCommand('secureFileTransfer.connect', 'command:workbench.action.terminal.new');
      assert.equal(api.session.state, 'disconnected');
      assert.equal(vscode.workspace.getConfiguration('secureFileTransfer').get('relayUrl'), '');
      assert.equal(await api.session.getToken('file:///etc/passwd'), undefined);
    });

    it('connects with an invite: the address goes to settings, the token to SecretStorage', async function () {
      await vscode.commands.executeCommand('secureFileTransfer.connect', `${ctx.relayUrl}#token=${encodeURIComponent(ctx.token)}`);
      assert.equal(api.session.state, 'connected');
      assert.equal(vscode.workspace.getConfiguration('secureFileTransfer').get('relayUrl'), ctx.relayUrl);
      assert.equal(await api.session.getToken(ctx.relayUrl), ctx.token);
      // One connection, one identity: the window never lists itself as a peer.
      await new Promise((r) => setTimeout(r, 500));
      const me = api.session.requireClient().identity.peerId;
      assert.equal((await api.session.identity()).peerId, me);
      assert.ok(!api.session.peers.some((p) => p.peerId === me || p.name === api.session.requireClient().name), 'the window does not see a second copy of itself');
    });

    it('an invite whose token the relay refuses does not replace the token that works', async function () {
      await vscode.commands.executeCommand('secureFileTransfer.connect', `${ctx.relayUrl}#token=not-the-team-token`);
      assert.equal(await api.session.getToken(ctx.relayUrl), ctx.token, 'the working token is kept');
      // A relay that refuses this window is not remembered for the next start either.
      await vscode.commands.executeCommand('secureFileTransfer.connect', `${ctx.shortGraceRelayUrl}#token=not-the-team-token`);
      assert.equal(vscode.workspace.getConfiguration('secureFileTransfer').get('relayUrl'), ctx.relayUrl);
      await vscode.commands.executeCommand('secureFileTransfer.connect', ctx.relayUrl);
      assert.equal(api.session.state, 'connected');
    });

    it('lists a teammate in the Peers view, with the fingerprint in the tooltip', async function () {
      bob = await teammate(ctx, 'Bob');
      cleanup.push(() => bob.client.closeGracefully());
      const peer = await waitFor('Bob in the Peers view', () => (api.peersView.getChildren(undefined) as PeerInfo[]).find((p) => p.peerId === bob.info.peerId));
      const item = await api.peersView.getTreeItem(peer);
      assert.equal(item.label, 'Bob');
      assert.equal(item.description, shortPeerId(bob.info.peerId));
      // Trust on first use: Bob was remembered the moment he appeared, unverified.
      assert.equal(item.contextValue, 'peer.seen');
      const tooltip = String(item.tooltip);
      assert.ok(tooltip.includes(fingerprint(bob.client.identity)), 'tooltip shows the fingerprint');
    });

    it('shows a verified badge once the safety number is confirmed', async function () {
      const peer = api.session.peers.find((p) => p.peerId === bob.info.peerId)!;
      await api.session.markVerified(peer);
      const item = await api.peersView.getTreeItem(peer);
      assert.match(String(item.description), /verified/);
      assert.equal(item.contextValue, 'peer.verified');
    });

    it('escapes a hostile display name before it reaches the UI', async function () {
      // A bidi override, and a Markdown command link a notification would make clickable.
      const mallory = await teammate(ctx, 'mallory\u202Egpj.exe[Save](command:x)');
      cleanup.push(() => mallory.client.closeGracefully());
      const peer = await waitFor('mallory listed', () => api.session.peers.find((p) => p.peerId === mallory.info.peerId));
      const item = await api.peersView.getTreeItem(peer);
      assert.ok(!String(item.label).includes('\u202E'), 'no raw bidi override in the label');
      assert.match(String(item.label), /\\u\{202E\}/);
      assert.ok(!/\[|\]\(/.test(String(item.label)), 'no link syntax survives');
      await mallory.client.closeGracefully();
      await waitFor('mallory gone', () => !api.session.peers.some((p) => p.peerId === mallory.info.peerId));
    });

    it('sends a file from a URI to a teammate (Send to…), byte-identical', async function () {
      const source = await randomFile(path.join(ctx.scratch, 'send', 'design.bin'), 3 * 2 ** 20 + 12345);
      const bobDir = path.join(ctx.scratch, 'bob-received');
      const received = nextOffer(bob.inbox).then((offer) => offer.accept({ directory: bobDir }));
      const uri = vscode.Uri.file(source);
      const result = await vscode.commands.executeCommand<SendResult>('secureFileTransfer.sendTo', uri, [uri], { to: [bob.info.peerId] });
      assert.ok(result, 'the command returns the result');
      assert.deepEqual(result.recipients, [{ peerId: bob.info.peerId, outcome: 'done' }]);
      const saved = await received;
      assert.equal(saved.files.length, 1);
      assert.equal(await sha256(saved.files[0]!.savedAs), await sha256(source));
      const entry = api.transfers.get(result.transferId)!;
      assert.equal(entry.status, 'done');
      assert.equal(entry.direction, 'send');
      const item = await api.transfersView.getTreeItem(entry);
      assert.match(String(item.label), /design\.bin/);
      assert.match(String(item.description), /to Bob .* delivered/);
    });

    it('sends several selected files and a folder in one transfer', async function () {
      const a = await randomFile(path.join(ctx.scratch, 'multi', 'a.txt'), 1000);
      const folder = path.join(ctx.scratch, 'multi', 'assets');
      await randomFile(path.join(folder, 'logo.png'), 70_000);
      await randomFile(path.join(folder, 'nested', 'icon.svg'), 900);
      const bobDir = path.join(ctx.scratch, 'bob-multi');
      const received = nextOffer(bob.inbox).then((offer) => offer.accept({ directory: bobDir }));
      const uris = [vscode.Uri.file(a), vscode.Uri.file(folder)];
      const result = await vscode.commands.executeCommand<SendResult>('secureFileTransfer.sendTo', uris[0], uris, { to: ['Bob'] });
      assert.equal(result?.recipients[0]?.outcome, 'done');
      await received;
      assert.equal(await sha256(path.join(bobDir, 'assets', 'nested', 'icon.svg')), await sha256(path.join(folder, 'nested', 'icon.svg')));
      assert.equal(await sha256(path.join(bobDir, 'a.txt')), await sha256(a));
    });

    it('sends Explorer items dropped on a peer in the Peers view', async function () {
      const dropped = await randomFile(path.join(ctx.scratch, 'drop', 'sketch.png'), 150_000);
      const bobDir = path.join(ctx.scratch, 'bob-dropped');
      const received = nextOffer(bob.inbox).then((offer) => offer.accept({ directory: bobDir }));
      const peer = api.session.peers.find((p) => p.peerId === bob.info.peerId)!;
      assert.ok(api.peersView.dropMimeTypes.includes('text/uri-list'), 'the Peers view accepts Explorer drops');
      // What the Explorer puts on the clipboard of a drag: a text/uri-list.
      const data = new vscode.DataTransfer();
      data.set('text/uri-list', new vscode.DataTransferItem(`${vscode.Uri.file(dropped).toString()}\r\n`));
      await api.peersView.handleDrop!(peer, data, new vscode.CancellationTokenSource().token);
      assert.equal(await sha256((await received).files[0]!.savedAs), await sha256(dropped));
    });

    it('lists an incoming offer and saves it where the user chose', async function () {
      const source = await randomFile(path.join(ctx.scratch, 'bob-send', 'minutes.pdf'), 2 * 2 ** 20 + 7);
      const meInfo = peerInfo(api.session.requireClient().identity, 'me');
      const sent = sendFiles(bob.client, { paths: [source], to: [meInfo] });
      const entry = await waitFor<TransferEntry>('the offer in the Transfers view', () => api.transfers.list().find((t) => t.direction === 'receive' && t.status === 'offer'));
      assert.equal(entry.peerLabel, 'Bob');
      assert.deepEqual(entry.names, ['minutes.pdf']);
      assert.equal(entry.totalBytes, 2 * 2 ** 20 + 7);
      const item = await api.transfersView.getTreeItem(entry);
      assert.equal(item.contextValue, 'offer');
      const target = path.join(ctx.scratch, 'my-downloads', 'renamed minutes.pdf');
      await fs.mkdir(path.dirname(target), { recursive: true });
      await vscode.commands.executeCommand('secureFileTransfer.saveOffer', entry.id, vscode.Uri.file(target));
      assert.equal((await sent).recipients[0]?.outcome, 'done');
      assert.equal(await sha256(target), await sha256(source));
      assert.equal(api.transfers.get(entry.id)?.status, 'done');
      assert.deepEqual(api.transfers.get(entry.id)?.savedTo, [target]);
      const done = await api.transfersView.getTreeItem(api.transfers.get(entry.id)!);
      assert.match(String(done.contextValue), /open/);
      // Nothing but the chosen file appeared in the folder (no temporary leftovers).
      assert.deepEqual(await fs.readdir(path.dirname(target)), ['renamed minutes.pdf']);
    });

    it('declines an incoming offer, and the sender learns it', async function () {
      const source = await randomFile(path.join(ctx.scratch, 'bob-send', 'unwanted.zip'), 5000);
      const meInfo = peerInfo(api.session.requireClient().identity, 'me');
      const sent = sendFiles(bob.client, { paths: [source], to: [meInfo] });
      const entry = await waitFor<TransferEntry>('the offer', () => api.transfers.list().find((t) => t.status === 'offer' && t.names[0] === 'unwanted.zip'));
      await vscode.commands.executeCommand('secureFileTransfer.declineOffer', entry.id);
      assert.deepEqual((await sent).recipients, [{ peerId: meInfo.peerId, outcome: 'declined' }]);
      assert.equal(api.transfers.get(entry.id)?.status, 'declined');
    });

    it('takes a withdrawn offer down: it can no longer be saved', async function () {
      const source = await randomFile(path.join(ctx.scratch, 'bob-send', 'oops.txt'), 100);
      const meInfo = peerInfo(api.session.requireClient().identity, 'me');
      const controller = new AbortController();
      const sent = sendFiles(bob.client, { paths: [source], to: [meInfo], signal: controller.signal }).catch((e: Error) => e);
      const entry = await waitFor<TransferEntry>('the offer', () => api.transfers.list().find((t) => t.status === 'offer' && t.names[0] === 'oops.txt'));
      controller.abort();
      await sent;
      await waitFor('withdrawn', () => api.transfers.get(entry.id)?.status === 'cancelled');
      const target = path.join(ctx.scratch, 'never', 'oops.txt');
      await vscode.commands.executeCommand('secureFileTransfer.saveOffer', entry.id, vscode.Uri.file(target));
      await assert.rejects(fs.stat(target), { code: 'ENOENT' });
      // Refused by the shell before anything started: the entry still says withdrawn, not failed.
      assert.equal(api.transfers.get(entry.id)?.status, 'cancelled');
    });

    it('takes unanswered offers down when the connection closes, and connects again', async function () {
      const source = await randomFile(path.join(ctx.scratch, 'bob-send', 'late.txt'), 100);
      const meInfo = peerInfo(api.session.requireClient().identity, 'me');
      const sent = sendFiles(bob.client, { paths: [source], to: [meInfo] }).catch((e: Error) => e);
      const entry = await waitFor<TransferEntry>('the offer', () => api.transfers.list().find((t) => t.status === 'offer' && t.names[0] === 'late.txt'));
      await vscode.commands.executeCommand('secureFileTransfer.disconnect');
      assert.equal(api.session.state, 'disconnected');
      assert.equal(api.transfers.get(entry.id)?.status, 'cancelled', 'an offer from a closed connection cannot be saved');
      assert.match(api.transfers.get(entry.id)?.error?.message ?? '', /connection to the relay dropped before you answered/);
      // Back online, the sender offers it again (a resume, within the relay's grace): it is listed
      // again, and this time it is declined.
      await vscode.commands.executeCommand('secureFileTransfer.connect', `${ctx.relayUrl}#token=${encodeURIComponent(ctx.token)}`);
      assert.equal(api.session.state, 'connected');
      await waitFor('Bob listed again', () => api.session.peers.some((p) => p.peerId === bob.info.peerId));
      await waitFor('the offer again', () => api.transfers.get(entry.id)?.status === 'offer', 20_000);
      await vscode.commands.executeCommand('secureFileTransfer.declineOffer', entry.id);
      const outcome = await sent;
      assert.ok(!(outcome instanceof Error), String(outcome));
      assert.deepEqual(outcome.recipients, [{ peerId: meInfo.peerId, outcome: 'declined' }]);
    });

    it('puts an offer that keeps coming back in front of the user three times, then only lists it', async function () {
      // What a relay that keeps cutting the connection would do: each time both ends are back, the
      // sender offers again. Here the window's own disconnects stand in for the relay's.
      const source = await randomFile(path.join(ctx.scratch, 'bob-send', 'again.txt'), 100);
      const meInfo = peerInfo(api.session.requireClient().identity, 'me');
      const prompts = answerPrompts(api, () => undefined);
      cleanup.push(() => prompts.dispose());
      const sent = sendFiles(bob.client, { paths: [source], to: [meInfo] }).catch((e: Error) => e);
      const listed = (round: number) => waitFor<TransferEntry>(`the offer, round ${round}`, () => api.transfers.list().find((t) => t.status === 'offer' && t.names[0] === 'again.txt'), 20_000);
      for (let round = 1; round < 4; round++) {
        await listed(round);
        await vscode.commands.executeCommand('secureFileTransfer.disconnect');
        await vscode.commands.executeCommand('secureFileTransfer.connect', `${ctx.relayUrl}#token=${encodeURIComponent(ctx.token)}`);
      }
      const { id } = await listed(4);
      prompts.dispose();
      assert.equal(prompts.seen.filter((p) => /wants to send you .*again\.txt/.test(p.message)).length, 3);
      await vscode.commands.executeCommand('secureFileTransfer.declineOffer', id);
      const outcome = await sent;
      assert.ok(!(outcome instanceof Error), String(outcome));
      assert.deepEqual(outcome.recipients, [{ peerId: meInfo.peerId, outcome: 'declined' }]);
    });

    it('sends from and saves to a non-file: file system through workspace.fs, within the size cap', async function () {
      const memfs = new MemoryFileSystem();
      const registration = vscode.workspace.registerFileSystemProvider('sftmem', memfs);
      cleanup.push(() => registration.dispose());
      const config = vscode.workspace.getConfiguration('secureFileTransfer');
      cleanup.push(() => config.update('maxInMemorySize', undefined, vscode.ConfigurationTarget.Global));
      const content = crypto.randomBytes(300_000);
      const virtual = vscode.Uri.parse('sftmem:/project/notes.bin');
      await vscode.workspace.fs.createDirectory(vscode.Uri.parse('sftmem:/project'));
      await vscode.workspace.fs.writeFile(virtual, content);

      // Sending: read through VS Code, delivered intact.
      const bobDir = path.join(ctx.scratch, 'bob-virtual');
      const received = nextOffer(bob.inbox).then((offer) => offer.accept({ directory: bobDir }));
      const result = await vscode.commands.executeCommand<SendResult>('secureFileTransfer.sendTo', virtual, [virtual], { to: ['Bob'] });
      assert.equal(result?.recipients[0]?.outcome, 'done');
      assert.ok((await fs.readFile((await received).files[0]!.savedAs)).equals(content));

      // A file the virtual file system does not have: a stable code and what happened, not INTERNAL.
      await assert.rejects(toLocalPaths([vscode.Uri.parse('sftmem:/project/missing.bin')], 1_000_000), (e: SftError) => e.code === 'IO' && /not found/.test(e.message));

      // Over the cap: refused before anything is offered.
      await config.update('maxInMemorySize', '100KB', vscode.ConfigurationTarget.Global);
      let offered = false;
      const spy = () => (offered = true);
      bob.inbox.on('offer', spy);
      const refused = await vscode.commands.executeCommand<SendResult | undefined>('secureFileTransfer.sendTo', virtual, [virtual], { to: ['Bob'] });
      await new Promise((r) => setTimeout(r, 300));
      bob.inbox.off('offer', spy);
      assert.equal(refused, undefined);
      assert.equal(offered, false, 'nothing was offered');

      // Saving: an offer saved to a virtual folder arrives through VS Code, intact; over the cap it waits.
      const meInfo = peerInfo(api.session.requireClient().identity, 'me');
      const source = await randomFile(path.join(ctx.scratch, 'bob-send', 'virtual.bin'), 200_000);
      const sent = sendFiles(bob.client, { paths: [source], to: [meInfo] });
      const entry = await waitFor<TransferEntry>('the offer', () => api.transfers.list().find((t) => t.status === 'offer' && t.names[0] === 'virtual.bin'));
      const target = vscode.Uri.parse('sftmem:/inbox/got.bin');
      await vscode.commands.executeCommand('secureFileTransfer.saveOffer', entry.id, target);
      assert.equal(api.transfers.get(entry.id)?.status, 'offer', 'too large for memory: still waiting, nothing accepted');
      await config.update('maxInMemorySize', '1MiB', vscode.ConfigurationTarget.Global);
      await vscode.commands.executeCommand('secureFileTransfer.saveOffer', entry.id, target);
      assert.equal((await sent).recipients[0]?.outcome, 'done');
      assert.ok(Buffer.from(await vscode.workspace.fs.readFile(target)).equals(await fs.readFile(source)));
      assert.deepEqual(api.transfers.get(entry.id)?.savedTo, [target.toString()]);
    });

    it('resumes a transfer when the connection drops in the middle; the window reconnects by itself', async function () {
      // A TCP proxy between this window and the relay, cut once 6 MB have gone through: a network failure.
      let forwarded = 0;
      let cut = false;
      const tap = await startTapProxy(ctx.relayUrl, (direction, data) => {
        if (direction !== 'to-relay') return;
        forwarded += data.length;
        if (!cut && forwarded > 6e6) {
          cut = true;
          setImmediate(() => tap.cut());
        }
      });
      cleanup.push(() => tap.close());
      await vscode.commands.executeCommand('secureFileTransfer.connect', `${tap.url}#token=${encodeURIComponent(ctx.token)}`);
      await waitFor('Bob seen through the tap', () => api.session.peers.some((p) => p.peerId === bob.info.peerId));
      const states: string[] = [];
      const watch = api.session.onDidChangeState((state) => states.push(state));
      const source = await randomFile(path.join(ctx.scratch, 'big', 'dataset.bin'), 24 * 2 ** 20 + 5);
      const bobDir = path.join(ctx.scratch, 'bob-resumed');
      const received = nextOffer(bob.inbox).then((offer) => offer.accept({ directory: bobDir }));
      const result = await vscode.commands.executeCommand<SendResult>('secureFileTransfer.sendTo', vscode.Uri.file(source), undefined, { to: ['Bob'] });
      watch.dispose();
      assert.equal(cut, true, 'the connection was cut');
      assert.ok(states.includes('connecting') && states.at(-1) === 'connected', `the window reconnected by itself (${states.join(' → ')})`);
      assert.deepEqual(result?.recipients, [{ peerId: bob.info.peerId, outcome: 'done' }]);
      assert.equal(await sha256((await received).files[0]!.savedAs), await sha256(source));
      await vscode.commands.executeCommand('secureFileTransfer.connect', `${ctx.relayUrl}#token=${encodeURIComponent(ctx.token)}`);
    });

    it('journals a running send in global storage (private, no key in clear) and removes it when done', async function () {
      const journalDir = path.join(api.testing!.context.globalStorageUri.fsPath, 'transfers');
      const source = await randomFile(path.join(ctx.scratch, 'journal', 'video.mp4'), 16 * 2 ** 20);
      const bobDir = path.join(ctx.scratch, 'bob-journal');
      // Bob takes his time to answer, so the journal can be looked at while the transfer is open.
      let release!: () => void;
      const answered = new Promise<void>((resolve) => (release = resolve));
      const received = nextOffer(bob.inbox).then(async (offer) => {
        await answered;
        return offer.accept({ directory: bobDir });
      });
      const sending = vscode.commands.executeCommand<SendResult>('secureFileTransfer.sendTo', vscode.Uri.file(source), undefined, { to: ['Bob'] });
      const file = await waitFor('a send journal', () => {
        try {
          return readdirSync(journalDir).find((f) => /^send-.*\.json$/.test(f));
        } catch {
          return undefined;
        }
      });
      const stat = await fs.stat(path.join(journalDir, file));
      if (process.platform !== 'win32') assert.equal(stat.mode & 0o777, 0o600, 'the journal is private');
      const journal = JSON.parse(await fs.readFile(path.join(journalDir, file), 'utf8')) as { kind: string; paths: string[] };
      assert.equal(journal.kind, 'send');
      assert.deepEqual(journal.paths, [source]);
      release();
      const result = await sending;
      assert.equal(result?.recipients[0]?.outcome, 'done');
      assert.equal(await sha256((await received).files[0]!.savedAs), await sha256(source));
      assert.deepEqual((await fs.readdir(journalDir)).filter((f) => f.startsWith('send-')), [], 'the journal is gone once delivered');
    });

    it('keeps keys and tokens in SecretStorage only: not in settings, not in global state', async function () {
      const context = api.testing!.context;
      const stored = await context.secrets.get(IDENTITY_SECRET_KEY);
      assert.ok(stored, 'the identity is in SecretStorage');
      const secret = JSON.parse(stored) as { sign: string; agree: string };
      const identity = Identity.fromSecret(secret);
      assert.equal(identity.peerId, api.session.requireClient().identity.peerId, 'the stored keys are the ones in use');
      const forbidden = [secret.sign, secret.agree, ctx.token];
      const globalState = JSON.stringify(context.globalState.keys().map((k) => [k, context.globalState.get(k)]));
      const workspaceState = JSON.stringify(context.workspaceState.keys().map((k) => [k, context.workspaceState.get(k)]));
      const settings = JSON.stringify(vscode.workspace.getConfiguration('secureFileTransfer'));
      const userSettings = JSON.stringify(vscode.workspace.getConfiguration().inspect('secureFileTransfer'));
      for (const value of forbidden) {
        for (const [where, text] of Object.entries({ globalState, workspaceState, settings, userSettings })) assert.ok(!text.includes(value), `a secret leaked into ${where}`);
      }
      // The workspace holds nothing of ours either.
      for (const folder of vscode.workspace.workspaceFolders ?? []) {
        const settingsFile = path.join(folder.uri.fsPath, '.vscode', 'settings.json');
        const text = await fs.readFile(settingsFile, 'utf8').catch(() => '');
        for (const value of forbidden) assert.ok(!text.includes(value), 'a secret leaked into the workspace');
      }
    });

    it('flags a verified name that arrives with another key as KEY CHANGED in the Peers view', async function () {
      const fake = await teammate(ctx, 'Bob');
      cleanup.push(() => fake.client.closeGracefully());
      const peer = await waitFor('the second Bob listed', () => api.session.peers.find((p) => p.peerId === fake.info.peerId));
      const item = await api.peersView.getTreeItem(peer);
      assert.equal(item.label, 'Bob');
      assert.equal(item.description, '⚠ KEY CHANGED');
      assert.equal(item.contextValue, 'peer.changed');
      assert.equal((item.iconPath as vscode.ThemeIcon).id, 'warning');
      assert.match(String(item.tooltip), /KEY CHANGED/);
      const real = await api.peersView.getTreeItem(api.session.peers.find((p) => p.peerId === bob.info.peerId)!);
      assert.equal(real.contextValue, 'peer.verified', 'the verified key keeps the name');
      await fake.client.closeGracefully();
      await waitFor('the second Bob gone', () => !api.session.peers.some((p) => p.peerId === fake.info.peerId));
    });

    // Trust on first use: Dave is only ever seen, never verified, and his name is still pinned.
    it('counts a verification another window saved, before this window saves anything', async function () {
      // A name no other test uses: verifying it pins it, which would make a later namesake KEY CHANGED.
      const olive = await teammate(ctx, 'Olive');
      cleanup.push(() => olive.client.closeGracefully());
      const peer = await waitFor('Olive listed', () => api.session.peers.find((p) => p.peerId === olive.info.peerId));
      assert.equal(api.session.verdict(peer), 'seen');
      // Another window verifies Olive and saves its book. VS Code carries global state between
      // windows; a second window cannot run in this suite, so its save is made to the same store.
      const store = api.testing!.context.globalState;
      const other = new TrustBook(structuredClone(store.get<TrustState>('sft.trust.v1')));
      other.markVerified(olive.info.peerId, 'Olive');
      await store.update('sft.trust.v1', other.snapshot);
      assert.equal(api.session.verdict(peer), 'verified');
      assert.equal((await api.peersView.getTreeItem(peer)).contextValue, 'peer.verified');
      await olive.client.closeGracefully();
      await waitFor('Olive gone', () => !api.session.peers.some((p) => p.peerId === olive.info.peerId));
    });

    let dave: Awaited<ReturnType<typeof teammate>>;

    it('pins a name on first contact: a seen, unverified name arriving with another key is KEY CHANGED', async function () {
      const first = await teammate(ctx, 'Dave');
      const seen = await waitFor('Dave listed', () => api.session.peers.find((p) => p.peerId === first.info.peerId));
      assert.equal((await api.peersView.getTreeItem(seen)).contextValue, 'peer.seen');
      await first.client.closeGracefully();
      await waitFor('Dave gone', () => !api.session.peers.some((p) => p.peerId === first.info.peerId));
      // Another identity takes the name (in another case: names compare as file names do).
      dave = await teammate(ctx, 'DAVE');
      cleanup.push(() => dave.client.closeGracefully());
      const peer = await waitFor('the new DAVE listed', () => api.session.peers.find((p) => p.peerId === dave.info.peerId));
      const item = await api.peersView.getTreeItem(peer);
      assert.equal(item.description, '⚠ KEY CHANGED');
      assert.equal(item.contextValue, 'peer.changed');
      assert.equal((item.iconPath as vscode.ThemeIcon).id, 'warning');
      assert.match(String(item.tooltip), /KEY CHANGED/);
      // The pin lives in global state, so it outlives this window.
      const stored = api.testing!.context.globalState.get<TrustState>('sft.trust.v1');
      assert.equal(new TrustBook(structuredClone(stored)).verdict(dave.info.peerId, 'DAVE'), 'changed');
      assert.ok(stored?.peers[first.info.peerId], 'the first key is on record');
    });

    it('sends to a changed key only after an explicit yes in a modal warning', async function () {
      const file = await randomFile(path.join(ctx.scratch, 'to-dave', 'plan.txt'), 2000);
      const uri = vscode.Uri.file(file);
      const dismissed = answerPrompts(api, () => undefined);
      try {
        let offered = false;
        const spy = () => (offered = true);
        dave.inbox.on('offer', spy);
        const refused = await vscode.commands.executeCommand<SendResult | undefined>('secureFileTransfer.sendTo', uri, [uri], { to: [dave.info.peerId] });
        await new Promise((r) => setTimeout(r, 300));
        dave.inbox.off('offer', spy);
        assert.equal(refused, undefined);
        assert.equal(offered, false, 'nothing was offered without a yes');
        assert.equal(dismissed.seen.length, 1);
        const [prompt] = dismissed.seen;
        assert.equal(prompt!.modal, true);
        assert.equal(prompt!.severity, 'warning');
        assert.match(prompt!.message, /^KEY CHANGED: "DAVE"/);
        assert.deepEqual(prompt!.items, ['Verify…', 'Send Anyway']);
      } finally {
        dismissed.dispose();
      }
      const yes = answerPrompts(api, (p) => (p.items.includes('Send Anyway') ? 'Send Anyway' : undefined));
      try {
        const daveDir = path.join(ctx.scratch, 'dave-received');
        const received = nextOffer(dave.inbox).then((offer) => offer.accept({ directory: daveDir }));
        const result = await vscode.commands.executeCommand<SendResult>('secureFileTransfer.sendTo', uri, [uri], { to: [dave.info.peerId] });
        assert.equal(result?.recipients[0]?.outcome, 'done');
        assert.equal(await sha256((await received).files[0]!.savedAs), await sha256(file));
        assert.equal(yes.seen.length, 1, 'asked again: a yes is for one transfer');
      } finally {
        yes.dispose();
      }
    });

    it('does not save an offer from a changed key without an explicit yes', async function () {
      const source = await randomFile(path.join(ctx.scratch, 'dave-send', 'contract.pdf'), 4000);
      const meInfo = peerInfo(api.session.requireClient().identity, 'me');
      const target = path.join(ctx.scratch, 'from-dave', 'contract.pdf');
      await fs.mkdir(path.dirname(target), { recursive: true });
      const dismissed = answerPrompts(api, () => undefined);
      let entry: TransferEntry;
      const sent = sendFiles(dave.client, { paths: [source], to: [meInfo] });
      try {
        entry = await waitFor<TransferEntry>('the offer', () => api.transfers.list().find((t) => t.status === 'offer' && t.names[0] === 'contract.pdf'));
        const warning = await waitFor('the KEY CHANGED warning', () => dismissed.seen.find((p) => /^KEY CHANGED: DAVE wants to send you/.test(p.message)));
        assert.deepEqual(warning.items, ['Verify…', 'Decline']);
        // Save (from the Transfers view, or scripted with a target) asks again, modally; dismissed, nothing is written.
        await vscode.commands.executeCommand('secureFileTransfer.saveOffer', entry.id, vscode.Uri.file(target));
        const modal = dismissed.seen.find((p) => p.modal);
        assert.ok(modal && modal.items.includes('Accept Anyway'), 'Save asks in a modal dialog');
        assert.equal(api.transfers.get(entry.id)?.status, 'offer', 'still waiting for an answer');
        await assert.rejects(fs.stat(target), { code: 'ENOENT' });
      } finally {
        dismissed.dispose();
      }
      const yes = answerPrompts(api, (p) => (p.items.includes('Accept Anyway') ? 'Accept Anyway' : undefined));
      try {
        await vscode.commands.executeCommand('secureFileTransfer.saveOffer', entry.id, vscode.Uri.file(target));
        assert.equal((await sent).recipients[0]?.outcome, 'done');
        assert.equal(await sha256(target), await sha256(source));
        assert.equal(yes.seen.length, 1);
      } finally {
        yes.dispose();
      }
    });

    it('needs no confirmation either way once the new key is verified (Verify Safety Number…)', async function () {
      const prompts = answerPrompts(api, (p) => (p.items.includes('They Match') ? 'They Match' : undefined));
      try {
        const peer = api.session.peers.find((p) => p.peerId === dave.info.peerId)!;
        await vscode.commands.executeCommand('secureFileTransfer.verifyPeer', peer);
        const asked = prompts.seen.splice(0);
        assert.equal(asked.length, 1);
        assert.equal(asked[0]!.modal, true);
        assert.match(asked[0]!.message, /^Safety number with DAVE$/);
        const item = await api.peersView.getTreeItem(peer);
        assert.equal(item.contextValue, 'peer.verified');
        assert.match(String(item.description), /verified/);

        const file = await randomFile(path.join(ctx.scratch, 'to-dave', 'plan-v2.txt'), 3000);
        const daveDir = path.join(ctx.scratch, 'dave-received-verified');
        const received = nextOffer(dave.inbox).then((offer) => offer.accept({ directory: daveDir }));
        const result = await vscode.commands.executeCommand<SendResult>('secureFileTransfer.sendTo', vscode.Uri.file(file), undefined, { to: [dave.info.peerId] });
        assert.equal(result?.recipients[0]?.outcome, 'done');
        assert.equal(await sha256((await received).files[0]!.savedAs), await sha256(file));

        const source = await randomFile(path.join(ctx.scratch, 'dave-send', 'contract-v2.pdf'), 5000);
        const sent = sendFiles(dave.client, { paths: [source], to: [peerInfo(api.session.requireClient().identity, 'me')] });
        const entry = await waitFor<TransferEntry>('the offer', () => api.transfers.list().find((t) => t.status === 'offer' && t.names[0] === 'contract-v2.pdf'));
        const target = path.join(ctx.scratch, 'from-dave', 'contract-v2.pdf');
        await vscode.commands.executeCommand('secureFileTransfer.saveOffer', entry.id, vscode.Uri.file(target));
        assert.equal((await sent).recipients[0]?.outcome, 'done');
        assert.equal(await sha256(target), await sha256(source));
        // The offer's own notification is there, as for anyone; no KEY CHANGED prompt either way.
        assert.deepEqual(
          prompts.seen.map((p) => p.message),
          ['DAVE (verified) wants to send you contract-v2.pdf (5.00 KB).'],
          'no trust prompt, sending or receiving',
        );
      } finally {
        prompts.dispose();
      }
    });

    it('cancels an incoming transfer under way (Cancel Transfer): both ends see CANCELLED, nothing partial', async function () {
      const source = await randomFile(path.join(ctx.scratch, 'bob-send', 'cancel-in.bin'), 32 * 2 ** 20);
      const meInfo = peerInfo(api.session.requireClient().identity, 'me');
      let cancelled = false;
      const sent = sendFiles(bob.client, {
        paths: [source],
        to: [meInfo],
        onProgress: (p) => {
          if (cancelled || p.bytes === 0) return;
          cancelled = true;
          // The receiving side's entry is the transfer itself: its id is the transfer id.
          void vscode.commands.executeCommand('secureFileTransfer.cancelTransfer', p.transferId);
        },
      }).catch((e: SftError) => e);
      const entry = await waitFor<TransferEntry>('the offer', () => api.transfers.list().find((t) => t.status === 'offer' && t.names[0] === 'cancel-in.bin'));
      const folder = path.join(ctx.scratch, 'cancelled-in');
      await fs.mkdir(folder, { recursive: true });
      await vscode.commands.executeCommand('secureFileTransfer.saveOffer', entry.id, vscode.Uri.file(folder));
      assert.equal(cancelled, true, 'cancelled while under way');
      assert.equal(api.transfers.get(entry.id)?.status, 'cancelled');
      assert.match(String((await api.transfersView.getTreeItem(api.transfers.get(entry.id)!)).description), /cancelled/);
      assert.equal(outcomeCode(await sent), 'CANCELLED', 'the sender is told');
      assert.deepEqual(await fs.readdir(folder), [], 'no partial file');
    });

    it('cancels an outgoing transfer under way (Cancel Transfer): both ends see CANCELLED, nothing partial', async function () {
      const source = await randomFile(path.join(ctx.scratch, 'cancel', 'cancel-out.bin'), 32 * 2 ** 20);
      const bobDir = path.join(ctx.scratch, 'bob-cancelled');
      let cancelled = false;
      const received = nextOffer(bob.inbox).then((offer) =>
        offer
          .accept({
            directory: bobDir,
            onProgress: (p) => {
              if (cancelled || p.bytes === 0) return;
              cancelled = true;
              void vscode.commands.executeCommand('secureFileTransfer.cancelTransfer', offer.transferId);
            },
          })
          .then(
            () => new Error('received in full'),
            (e: SftError) => e,
          ),
      );
      const result = await vscode.commands.executeCommand<SendResult | undefined>('secureFileTransfer.sendTo', vscode.Uri.file(source), undefined, { to: [bob.info.peerId] });
      assert.equal(cancelled, true, 'cancelled while under way');
      assert.ok(result);
      assert.equal(outcomeCode(result), 'CANCELLED');
      const entry = api.transfers.get(result.transferId);
      assert.equal(entry?.status, 'cancelled');
      assert.match(String((await api.transfersView.getTreeItem(entry!)).description), /cancelled/);
      assert.equal(((await received) as SftError).code, 'CANCELLED', 'the recipient is told');
      assert.deepEqual(await fs.readdir(bobDir).catch(() => []), [], 'no partial file');
    });

    it("shows EXPIRED when a sender never comes back within the relay's resume grace, and keeps nothing partial", async function () {
      await vscode.commands.executeCommand('secureFileTransfer.connect', `${ctx.shortGraceRelayUrl}#token=${encodeURIComponent(ctx.token)}`);
      assert.equal(api.session.state, 'connected');
      assert.equal(api.session.requireClient().relayLimits?.resumeGraceMs, 2000);
      const erin = await teammate({ relayUrl: ctx.shortGraceRelayUrl, token: ctx.token }, 'Erin');
      cleanup.push(() => erin.client.close());
      const source = await randomFile(path.join(ctx.scratch, 'erin-send', 'gone.bin'), 32 * 2 ** 20);
      let dropped = false;
      const sent = sendFiles(erin.client, {
        paths: [source],
        to: [peerInfo(api.session.requireClient().identity, 'me')],
        onProgress: (p) => {
          if (dropped || p.bytes === 0) return;
          dropped = true;
          // Not a goodbye: the connection just goes, and never comes back.
          erin.client.close();
        },
      }).catch((e: SftError) => e);
      const entry = await waitFor<TransferEntry>('the offer', () => api.transfers.list().find((t) => t.status === 'offer' && t.names[0] === 'gone.bin'));
      const folder = path.join(ctx.scratch, 'expired-in');
      await fs.mkdir(folder, { recursive: true });
      await vscode.commands.executeCommand('secureFileTransfer.saveOffer', entry.id, vscode.Uri.file(folder));
      assert.equal(dropped, true);
      assert.equal(api.transfers.get(entry.id)?.status, 'failed');
      assert.equal(api.transfers.get(entry.id)?.error?.code, 'EXPIRED');
      assert.match(String((await api.transfersView.getTreeItem(api.transfers.get(entry.id)!)).description), /failed: EXPIRED/);
      assert.deepEqual(await fs.readdir(folder), [], 'the partial file was removed');
      await sent;
    });

    it("shows EXPIRED when a recipient never comes back within the relay's resume grace", async function () {
      const frank = await teammate({ relayUrl: ctx.shortGraceRelayUrl, token: ctx.token }, 'Frank');
      cleanup.push(() => frank.client.close());
      await waitFor('Frank listed', () => api.session.peers.some((p) => p.peerId === frank.info.peerId));
      const source = await randomFile(path.join(ctx.scratch, 'expiring', 'never-there.bin'), 32 * 2 ** 20);
      const frankDir = path.join(ctx.scratch, 'frank-expired');
      let dropped = false;
      const received = nextOffer(frank.inbox).then((offer) =>
        offer
          .accept({
            directory: frankDir,
            onProgress: (p) => {
              if (dropped || p.bytes === 0) return;
              dropped = true;
              frank.client.close();
            },
          })
          .then(
            () => new Error('received in full'),
            (e: SftError) => e,
          ),
      );
      const result = await vscode.commands.executeCommand<SendResult | undefined>('secureFileTransfer.sendTo', vscode.Uri.file(source), undefined, { to: [frank.info.peerId] });
      assert.equal(dropped, true);
      assert.ok(result);
      assert.equal(outcomeCode(result), 'EXPIRED');
      const entry = api.transfers.get(result.transferId)!;
      assert.equal(entry.status, 'failed');
      assert.equal(entry.error?.code, 'EXPIRED');
      assert.match(String((await api.transfersView.getTreeItem(entry)).description), /failed: EXPIRED/);
      assert.equal(((await received) as SftError).code, 'EXPIRED', 'the recipient gave up too');
      assert.deepEqual(await fs.readdir(frankDir).catch(() => []), [], 'no partial file at the recipient');
      await vscode.commands.executeCommand('secureFileTransfer.connect', `${ctx.relayUrl}#token=${encodeURIComponent(ctx.token)}`);
      assert.equal(api.session.state, 'connected');
    });

    it('starts a relay inside VS Code, connects to it, admits only invite holders, and stops it', async function () {
      const config = vscode.workspace.getConfiguration('secureFileTransfer');
      await config.update('relay.port', 0, vscode.ConfigurationTarget.Global);
      cleanup.push(() => config.update('relay.port', undefined, vscode.ConfigurationTarget.Global));
      // The window is on the suite's relay: it is asked before it leaves it.
      assert.equal(api.session.state, 'connected');
      const switching = answerPrompts(api, (p) => (p.items.includes('Start and Switch') ? 'Start and Switch' : undefined));
      await vscode.commands.executeCommand('secureFileTransfer.startRelay');
      switching.dispose();
      assert.equal(switching.seen.length, 1);
      assert.match(switching.seen[0]!.message, /Start your own relay and move this window to it\?/);
      const running = api.relayHost.running;
      assert.ok(running, 'the relay runs');
      assert.equal(api.session.relayUrl, running.localUrl);
      assert.equal(api.session.state, 'connected');
      const invite = api.relayHost.invite()!;
      assert.match(invite, /#token=/);

      // A stranger without the token is refused; a teammate with the invite's token gets in.
      const stranger = new RelayClient({ url: running.localUrl, identity: Identity.generate(), name: 'stranger', reconnect: false });
      await assert.rejects(stranger.connect(), { code: 'UNAUTHORIZED' });
      stranger.close();
      const carol = await teammate({ relayUrl: running.localUrl, token: running.token }, 'Carol');
      await waitFor('Carol listed', () => api.session.peers.some((p) => p.name === 'Carol'));
      const file = await randomFile(path.join(ctx.scratch, 'carol', 'hello.txt'), 4096);
      const carolDir = path.join(ctx.scratch, 'carol-received');
      const received = nextOffer(carol.inbox).then((offer) => offer.accept({ directory: carolDir }));
      const result = await vscode.commands.executeCommand<SendResult>('secureFileTransfer.sendTo', vscode.Uri.file(file), undefined, { to: ['Carol'] });
      assert.equal(result?.recipients[0]?.outcome, 'done');
      assert.equal(await sha256((await received).files[0]!.savedAs), await sha256(file));
      await carol.client.closeGracefully();

      // A new token revokes the invites handed out: the old token no longer admits anyone, the
      // new invite does, and this window stays connected (and would reconnect with the new one).
      const prompts = answerPrompts(api, (p) => (p.items.includes('New Token') ? 'New Token' : undefined));
      await vscode.commands.executeCommand('secureFileTransfer.rotateRelayToken');
      prompts.dispose();
      const rotated = api.relayHost.running!.token;
      assert.notEqual(rotated, running.token);
      assert.match(api.relayHost.invite()!, new RegExp(`#token=${rotated}$`));
      assert.equal(await api.session.getToken(running.localUrl), rotated);
      const revoked = new RelayClient({ url: running.localUrl, identity: Identity.generate(), name: 'old-invite', token: running.token, reconnect: false });
      await assert.rejects(revoked.connect(), { code: 'UNAUTHORIZED' });
      revoked.close();
      const dave = await teammate({ relayUrl: running.localUrl, token: rotated }, 'Dave');
      assert.equal(api.session.state, 'connected');

      // Stopping the relay under a connected teammate asks first; dismissed, it keeps running.
      const declined = answerPrompts(api, () => undefined);
      await vscode.commands.executeCommand('secureFileTransfer.stopRelay');
      declined.dispose();
      assert.match(declined.seen[0]?.message ?? '', /Stop the relay\? 1 teammate is connected to it\./);
      assert.ok(api.relayHost.running, 'still running');
      assert.equal(dave.client.state, 'connected');
      const confirmed = answerPrompts(api, (p) => (p.items.includes('Stop Relay') ? 'Stop Relay' : undefined));
      await vscode.commands.executeCommand('secureFileTransfer.stopRelay');
      confirmed.dispose();
      await waitFor('Dave dropped', () => dave.client.state !== 'connected');
      dave.client.close();
      assert.equal(api.relayHost.running, undefined);
      assert.equal(api.session.state, 'disconnected');
      const late = new RelayClient({ url: running.localUrl, identity: Identity.generate(), name: 'late', token: running.token, reconnect: false, connectTimeoutMs: 2000 });
      await assert.rejects(late.connect(), { code: 'RELAY_UNREACHABLE' });
      late.close();
      // The relay's token is a secret too.
      assert.ok(!JSON.stringify(vscode.workspace.getConfiguration('secureFileTransfer')).includes(running.token));
    });
  });
}
