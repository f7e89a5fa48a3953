/**
 * `sft`: the command-line client. The same keys, protocol and guarantees as the VS Code extension,
 * for build servers and terminals. Results go to stdout, progress and diagnostics to stderr, and
 * the exit code tells scripts what happened (see EXIT_CODES).
 */
import { sizeHeapForStreaming } from './heap';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { RelayClient } from '../core/client';
import { SftError, toSftError } from '../core/errors';
import { fingerprint, safetyNumber, shortPeerId } from '../core/crypto/identity';
import { FileSecretStore, loadOrCreateIdentity } from '../core/keystore';
import { loadTrustFile, saveTrustFile, type TrustBook } from '../core/trust';
import { escapeForDisplay } from '../core/names';
import { formatBytes, timeAndRate } from '../core/format';
import { peerIdentity, type PeerInfo } from '../core/protocol';
import { resumeSend, sendFiles, type SendResult } from '../core/transfer/sender';
import { Inbox, type ConflictPolicy, type IncomingOffer, type ReceiveResult } from '../core/transfer/receiver';
import { TransferJournal, type OutgoingRecord } from '../core/transfer/journal';
import { confirm, progressPrinter } from './terminal';
import { EXIT_CODES, exitCodeFor } from './exit-codes';
import { versionLine } from '../core/version';
import { keepFreedMemoryForReuse } from '../core/allocator';

sizeHeapForStreaming(); // Few full collections while chunks stream (heap.ts).
keepFreedMemoryForReuse(); // Chunks reuse freed memory instead of faulting in new pages (allocator.ts).

/** The login name; a container or CI job may run as a user id with no account, which has none. */
function defaultName(): string {
  try {
    return os.userInfo().username;
  } catch {
    return process.env.USER ?? process.env.USERNAME ?? 'sft user';
  }
}

function defaultIdentityDir(): string {
  if (process.platform === 'win32') return path.join(process.env.APPDATA ?? path.join(os.homedir(), 'AppData', 'Roaming'), 'sft');
  if (process.platform === 'darwin') return path.join(os.homedir(), 'Library', 'Application Support', 'sft');
  return path.join(process.env.XDG_CONFIG_HOME ?? path.join(os.homedir(), '.config'), 'sft');
}

interface CommonOptions {
  relay: string;
  token?: string;
  tokenFile?: string;
  name: string;
  identity: string;
  ca?: string;
}

/** A file named by an option, with the option and the path in the error (exit 7). */
async function readOptionFile(option: string, file: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (error) {
    const why = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'it does not exist' : toSftError(error).message;
    throw new SftError('IO', `Could not read ${option} ${escapeForDisplay(file)}: ${why}`, error);
  }
}

async function resolveToken(options: CommonOptions): Promise<string | undefined> {
  if (options.tokenFile) return (await readOptionFile('--token-file', options.tokenFile)).trim();
  if (options.token && process.argv.some((a) => a === '--token' || a.startsWith('--token='))) {
    // The process list shows argv to every local user; environment and files are private.
    process.stderr.write('warning: --token is visible in the process list; prefer SFT_TOKEN or --token-file.\n');
  }
  return options.token;
}

async function openSession(options: Pick<CommonOptions, 'identity'>) {
  const store = new FileSecretStore(path.join(options.identity, 'identity.json'));
  const { identity, created } = await loadOrCreateIdentity(store);
  if (created) process.stderr.write(`Created a new identity in ${store.file} (peer id ${identity.peerId}).\n`);
  const trustFile = path.join(options.identity, 'trust.json');
  const trust = await loadTrustFile(trustFile);
  // Journals of transfers under way, so that one interrupted by a killed process can resume.
  const journal = new TransferJournal(path.join(options.identity, 'transfers'));
  return { identity, trust, trustFile, journal };
}

/** Clients this run opened; closed on any exit path so a failed command never hangs. */
const openClients = new Set<RelayClient>();

type Session = Awaited<ReturnType<typeof openSession>>;

/** `beforeJoin` sets up what must listen from the first message on (an Inbox). */
async function connect(options: CommonOptions, beforeJoin?: (client: RelayClient, session: Session) => void, opened?: Session) {
  const session = opened ?? (await openSession(options));
  const token = await resolveToken(options);
  const ca = options.ca ? await readOptionFile('--ca', options.ca) : undefined;
  // Reconnect after a drop: a running transfer then resumes where it stopped (sender.ts, receiver.ts).
  const client = new RelayClient({ url: options.relay, identity: session.identity, name: options.name, reconnect: true, ...(token ? { token } : {}), ...(ca ? { ca } : {}) });
  openClients.add(client);
  client.on('notice', (n) => process.stderr.write(`relay: ${escapeForDisplay(n.message)} (${n.code})\n`));
  beforeJoin?.(client, session);
  await client.connect();
  // Trust on first use: remember every peer we meet, so a later key change is noticed.
  const remember = async () => {
    let changed = false;
    for (const p of client.peers.values()) changed = session.trust.remember(p.peerId, p.name) || changed;
    if (changed) await saveTrustFile(session.trustFile, session.trust);
  };
  await remember();
  client.on('peers', () => void remember());
  return { ...session, client };
}

const KEY_CHANGED_WARNING = (peer: PeerInfo) =>
  `WARNING: KEY CHANGED. The name "${escapeForDisplay(peer.name)}" belongs to a different key (the one first met with it, or the one you verified); this may be someone else, or a relay in the middle. Run "sft verify ${escapeForDisplay(peer.name)}" and compare safety numbers.`;

function describePeer(peer: PeerInfo, trust: TrustBook): string {
  const verdict = trust.verdict(peer.peerId, peer.name);
  const badge = verdict === 'verified' ? 'verified' : verdict === 'changed' ? 'KEY CHANGED: verify again' : 'not verified';
  return `${escapeForDisplay(peer.name)} (${shortPeerId(peer.peerId)}, ${badge})`;
}

function program(): Command {
  const cli = new Command('sft')
    .description('Send and receive files end-to-end encrypted through a Secure File Transfer relay.')
    .version(versionLine(), '-V, --version', 'print the version and the protocol version')
    .showHelpAfterError()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    // Commander's own exits (a usage error, --help, --version) come back here as errors, so a usage
    // error exits 2 as documented instead of Commander's 1. Inherited by the commands below.
    .exitOverride();

  const identityOption = () => new Option('--identity <dir>', 'folder holding this identity (key file mode 0600)').env('SFT_IDENTITY_DIR').default(defaultIdentityDir());
  const common = (command: Command) =>
    command
      .addOption(new Option('--relay <url>', 'relay address').env('SFT_RELAY').default('http://127.0.0.1:7474'))
      .addOption(new Option('--token <token>', 'team token (prefer SFT_TOKEN or --token-file: argv is visible to other users)').env('SFT_TOKEN'))
      .addOption(new Option('--token-file <file>', 'read the team token from a file'))
      .addOption(new Option('--ca <file>', 'PEM certificate(s) to trust for a wss:// relay with a private CA').env('SFT_CA'))
      .addOption(new Option('--name <name>', 'display name shown to teammates').env('SFT_NAME').default(defaultName()))
      .addOption(identityOption());

  // Never connects: only the identity folder matters.
  cli
    .command('id')
    .description("print this identity's peer id and fingerprint")
    .addOption(identityOption())
    .option('--json', 'print JSON')
    .action(async (options: Pick<CommonOptions, 'identity'> & { json?: boolean }) => {
      const { identity } = await openSession(options);
      if (options.json) printJson({ peerId: identity.peerId, fingerprint: fingerprint(identity) });
      else process.stdout.write(`peer id:     ${identity.peerId}\nfingerprint: ${fingerprint(identity)}\n`);
    });

  common(cli.command('peers').description('list who is online on the relay'))
    .option('--json', 'print JSON')
    .action(async (options: CommonOptions & { json?: boolean }) => {
      const { client, trust } = await connect(options);
      const peers = [...client.peers.values()].sort((a, b) => a.name.localeCompare(b.name));
      if (options.json) {
        printJson(peers.map((p) => ({ peerId: p.peerId, name: p.name, verified: trust.verdict(p.peerId, p.name) === 'verified', trust: trust.verdict(p.peerId, p.name) })));
      } else if (peers.length === 0) {
        process.stdout.write('Nobody else is online.\n');
      } else {
        for (const p of peers) process.stdout.write(`${p.peerId}  ${describePeer(p, trust)}\n`);
      }
      await client.closeGracefully();
    });

  common(cli.command('verify').description("compare safety numbers with a teammate and mark their key verified"))
    .argument('<peer>', 'name or peer id')
    .option('--yes', 'mark verified without asking (only after comparing the numbers another way)')
    .option('--json', 'print the safety number and the outcome as JSON (the prose goes to stderr)')
    .action(async (peerName: string, options: CommonOptions & { yes?: boolean; json?: boolean }) => {
      const { client, trust, trustFile, identity } = await connect(options);
      const peer = client.findPeer(peerName);
      const number = safetyNumber(identity, peerIdentity(peer));
      const say = (text: string) => (options.json ? process.stderr : process.stdout).write(text);
      if (trust.verdict(peer.peerId, peer.name) === 'changed') process.stderr.write(`${KEY_CHANGED_WARNING(peer)}\nVerifying this key makes it the one "${escapeForDisplay(peer.name)}" is pinned to.\n`);
      say(`Safety number with ${escapeForDisplay(peer.name)}:\n\n  ${number}\n\nRead it to each other (in person or on a call). If it matches, nobody sits between you.\n`);
      const ok = options.yes || (process.stdin.isTTY && (await confirm('Do the numbers match?')));
      if (options.json) printJson({ peerId: peer.peerId, name: peer.name, safetyNumber: number, verified: Boolean(ok) });
      if (ok) {
        trust.markVerified(peer.peerId, peer.name);
        await saveTrustFile(trustFile, trust);
        say(`Marked ${escapeForDisplay(peer.name)} as verified.\n`);
      } else if (!process.stdin.isTTY) {
        process.stderr.write('Not marked as verified: there is no terminal to ask on. Compare the numbers, then run this again with --yes.\n');
        process.exitCode = EXIT_CODES.usage;
      } else {
        say('Not marked as verified.\n');
        process.exitCode = EXIT_CODES.failed;
      }
      await client.closeGracefully();
    });

  common(cli.command('send').description('send files or folders to one or more teammates'))
    .argument('<paths...>', 'files or folders')
    .requiredOption('--to <peers>', 'recipients: names or peer ids, comma-separated')
    .option('--json', 'print the result as JSON')
    .option('--trust-changed-key', 'send even to a peer whose key changed (its name was first met, or verified, with another key)')
    .action(async (paths: string[], options: CommonOptions & { to: string; json?: boolean; trustChangedKey?: boolean }) => {
      // A mistyped path is the user's to fix before anyone is contacted; unless an interrupted send
      // of these very paths is journaled, whose resume reports the vanished file and clears it.
      const session = await openSession(options);
      const missing = await firstMissing(paths);
      if (missing !== undefined) {
        const wanted = paths.map((p) => path.resolve(p)).join('\0');
        const journaled = (await session.journal.outgoing()).some((r) => r.paths.join('\0') === wanted);
        if (!journaled) throw new SftError('IO', `${escapeForDisplay(missing)} does not exist.`);
      }
      const { client, trust, journal } = await connect(options, undefined, session);
      const names = options.to.split(',').map((s) => s.trim());
      // The same command again after an earlier `sft send` was killed: continue that transfer.
      const journaled = await journaledSend(journal, paths, names, client.resumeGraceMs);
      const to = journaled ? journaled.recipients : names.map((s) => client.findPeer(s));
      for (const peer of journaled ? [] : to) {
        if (trust.verdict(peer.peerId, peer.name) !== 'changed') continue;
        // Trust on first use, then pinning: a changed key needs an explicit yes until re-verified.
        process.stderr.write(`${KEY_CHANGED_WARNING(peer)}\n`);
        const confirmed = options.trustChangedKey || (process.stdin.isTTY && (await confirm(`Send to ${escapeForDisplay(peer.name)} anyway?`)));
        if (!confirmed) throw new SftError('BAD_SIGNATURE', `Not sent: ${escapeForDisplay(peer.name)}'s key changed. Compare safety numbers with "sft verify", or pass --trust-changed-key.`);
      }
      const progress = progressPrinter('sending');
      const controller = new AbortController();
      process.once('SIGINT', () => controller.abort());
      let transferId = journaled?.transferId;
      const common = {
        journal,
        signal: controller.signal,
        onProgress: (p: Parameters<typeof progress.update>[0]) => progress.update(p),
        onResumed: (fromChunk: number, chunkCount: number, peerId: string) =>
          process.stderr.write(`Resuming transfer ${transferId ?? ''}${to.length > 1 ? ` to ${namesOf(to.filter((p) => p.peerId === peerId))}` : ''} from chunk ${fromChunk} of ${chunkCount}: the recipient already holds the chunks before it.\n`),
      };
      let result: SendResult;
      if (journaled) {
        process.stderr.write(
          `Resuming transfer ${journaled.transferId} to ${namesOf(journaled.recipients)} (${journaled.files.length} file(s), ${formatBytes(journaled.files.reduce((n, f) => n + f.size, 0))}), interrupted when an earlier sft send stopped; waiting for the ${journaled.recipients.length > 1 ? 'recipients' : 'recipient'}…\n`,
        );
        result = await resumeSend(client, { ...common, record: journaled });
      } else {
        result = await sendFiles(client, {
          ...common,
          paths,
          to,
          onOffered: (id, sources) => {
            transferId = id;
            const skipped = sources.skipped.length > 0 ? ` (skipped ${sources.skipped.length} links or special files)` : '';
            process.stderr.write(`Offered ${sources.files.length} file(s), ${formatBytes(sources.totalBytes)}, to ${to.map((p) => escapeForDisplay(p.name)).join(', ')}${skipped}; waiting for an answer…\n`);
          },
        });
      }
      progress.end();
      await client.closeGracefully();
      process.exitCode = reportSent(result, to, options.json);
    });

  common(cli.command('resume').description('continue every transfer an earlier sft send left unfinished (killed or crashed)'))
    .option('--json', 'print each result as JSON')
    .action(async (options: CommonOptions & { json?: boolean }) => {
      // Nothing to resume needs no relay: say so even when it cannot be reached.
      const session = await openSession(options);
      if ((await session.journal.outgoing()).length === 0) {
        process.stderr.write('No interrupted transfers to resume.\n');
        return;
      }
      const { client, journal } = await connect(options, undefined, session);
      const graceMs = client.resumeGraceMs;
      let exit: number = EXIT_CODES.ok;
      const records: OutgoingRecord[] = [];
      for (const record of await journal.outgoing()) {
        if (TransferJournal.isHeldElsewhere(record)) {
          process.stderr.write(`Transfer ${record.transferId} to ${namesOf(record.recipients)} is still being sent by process ${record.pid}; left alone.\n`);
        } else if (!TransferJournal.isExpired(record, graceMs)) records.push(record);
        else {
          process.stderr.write(`The interrupted transfer ${record.transferId} to ${namesOf(record.recipients)} can no longer be resumed (EXPIRED); its journal was removed.\n`);
          await journal.discard(record);
          exit = Math.max(exit, exitCodeFor('EXPIRED'));
        }
      }
      if (records.length === 0 && exit === EXIT_CODES.ok) process.stderr.write('No interrupted transfers to resume.\n');
      const controller = new AbortController();
      process.once('SIGINT', () => controller.abort());
      // One progress line makes sense for one transfer; several run side by side, reported at the end.
      const progress = records.length === 1 ? progressPrinter('sending') : undefined;
      const results = await Promise.all(
        records.map((record) => {
          process.stderr.write(`Resuming transfer ${record.transferId} to ${namesOf(record.recipients)} (${record.paths.map((p) => escapeForDisplay(path.basename(p))).join(', ')}); waiting for the ${record.recipients.length > 1 ? 'recipients' : 'recipient'}…\n`);
          return resumeSend(client, {
            journal,
            record,
            signal: controller.signal,
            ...(progress ? { onProgress: (p: Parameters<typeof progress.update>[0]) => progress.update(p) } : {}),
            onResumed: (fromChunk, chunkCount, peerId) =>
              process.stderr.write(`Resuming transfer ${record.transferId}${record.recipients.length > 1 ? ` to ${namesOf(record.recipients.filter((p) => p.peerId === peerId))}` : ''} from chunk ${fromChunk} of ${chunkCount}.\n`),
          }).then(
            (result) => ({ result, to: record.recipients }),
            (error: unknown) => ({ error: toSftError(error), record }),
          );
        }),
      );
      progress?.end();
      await client.closeGracefully();
      for (const outcome of results) {
        if ('result' in outcome) exit = Math.max(exit, reportSent(outcome.result, outcome.to, options.json));
        else {
          process.stderr.write(`Transfer ${outcome.record.transferId} not resumed: ${escapeForDisplay(outcome.error.message)} (${outcome.error.code})\n`);
          if (options.json) printJson({ transferId: outcome.record.transferId, error: outcome.error });
          exit = Math.max(exit, exitCodeFor(outcome.error.code));
        }
      }
      process.exitCode = exit;
    });

  common(cli.command('receive').description('wait for offers and save them'))
    .requiredOption('--out <dir>', 'folder to save into')
    .option('--yes', 'accept every offer without asking')
    .option('--once', 'exit after the first transfer')
    .addOption(new Option('--on-conflict <policy>', 'when a file exists').choices(['rename', 'overwrite', 'fail']).default('rename'))
    .option('--json', 'print one JSON line per transfer received, declined or failed')
    .action(async (options: CommonOptions & { out: string; yes?: boolean; once?: boolean; onConflict: ConflictPolicy; json?: boolean }) => {
      let inbox!: Inbox;
      // Listening before the join: a sender waiting for us to come back offers at once.
      const { client, trust } = await connect(options, (c, session) => {
        inbox = new Inbox(c, { trustOf: (id, name) => session.trust.verdict(id, name), journal: session.journal });
      });
      process.stderr.write(`Waiting for files as ${escapeForDisplay(options.name)} (${shortPeerId(client.identity.peerId)}); saving to ${path.resolve(options.out)}. Ctrl-C to stop.\n`);
      let busy = Promise.resolve();
      let closing = false;
      const stopping = new AbortController();
      const finished = new Promise<void>((resolve) => {
        inbox.on('refused', (r) => {
          process.stderr.write(`Refused an offer from ${shortPeerId(r.from)}: ${r.error.message} (${r.error.code})\n`);
          process.exitCode = exitCodeFor(r.error.code);
          if (options.once) resolve();
        });
        inbox.on('withdrawn', (w) => process.stderr.write(`The offer from ${shortPeerId(w.from)} was withdrawn: ${escapeForDisplay(w.error.message)} (${w.error.code})\n`));
        // Transfers accepted before this process was restarted: no second prompt.
        inbox.on('resumed', (r) => {
          stopping.signal.addEventListener('abort', () => r.cancel(), { once: true });
          process.stderr.write(
            `Resuming transfer ${r.transferId} from ${describePeer(r.sender, trust)}, accepted before this process restarted (not asking again): ${r.fileCount} file(s), ${formatBytes(r.totalBytes)}, from chunk ${r.fromChunk} of ${r.chunkCount}, into ${path.resolve(r.directory)}.\n`,
          );
          const progress = progressPrinter('receiving');
          r.onProgress = (p) => progress.update(p);
          busy = busy.then(async () => {
            const code = await reportReceived(r.transferId, r.sender, r.result, progress, options.json);
            if (code !== EXIT_CODES.ok) process.exitCode = code;
            if (options.once) resolve();
          });
        });
        inbox.on('expired', (e) => {
          const names = e.files.map((f) => escapeForDisplay(path.basename(f))).join(', ');
          process.stderr.write(`The transfer ${e.transferId} from ${shortPeerId(e.from)} (${names}), accepted before this process restarted, ${e.error.code === 'EXPIRED' ? 'expired' : 'was called off'}: ${escapeForDisplay(e.error.message)} (${e.error.code})\n`);
          process.exitCode = exitCodeFor(e.error.code);
          if (options.once) resolve();
        });
        inbox.restore().catch((error: unknown) => process.stderr.write(`warning: ${escapeForDisplay(toSftError(error).message)}\n`));
        inbox.on('offer', (offer) => {
          // One prompt at a time: offers queue behind the one being answered.
          busy = busy.then(async () => {
            if (stopping.signal.aborted) return offer.decline();
            const code = await handleOffer(offer, options, trust, stopping.signal);
            if (code !== EXIT_CODES.ok) process.exitCode = code;
            if (options.once) resolve();
          });
        });
        client.on('state', (state) => {
          if (state === 'disconnected' && !closing) {
            process.stderr.write('Disconnected from the relay.\n');
            process.exitCode = EXIT_CODES.network;
            resolve();
          }
        });
        // Ctrl-C: cancel the transfer under way (its partial files are removed), decline what waits.
        for (const signal of ['SIGINT', 'SIGTERM'] as const) {
          process.once(signal, () => {
            stopping.abort();
            resolve();
          });
        }
      });
      await finished;
      await busy;
      closing = true;
      inbox.dispose();
      await client.closeGracefully();
    });

  return cli;
}

async function handleOffer(offer: IncomingOffer, options: { out: string; yes?: boolean; onConflict: ConflictPolicy; json?: boolean }, trust: TrustBook, signal: AbortSignal): Promise<number> {
  const names = offer.entries.filter((e) => e.type === 'file').map((e) => escapeForDisplay(e.path));
  const shown = names.length > 5 ? [...names.slice(0, 5), `… and ${names.length - 5} more`] : names;
  process.stderr.write(`${describePeer(offer.sender, trust)} wants to send ${offer.fileCount} file(s), ${formatBytes(offer.totalBytes)}:\n${shown.map((n) => `  ${n}\n`).join('')}`);
  const changed = offer.senderTrust === 'changed';
  if (changed) process.stderr.write(`${KEY_CHANGED_WARNING(offer.sender)}\n`);
  // --yes never covers a changed key: that needs a person's explicit yes, or re-verification.
  // A prompt interrupted (Ctrl-C, closed input) is a no.
  const accept =
    (options.yes && !changed) || (process.stdin.isTTY ? await confirm(changed ? 'Accept from this CHANGED key anyway?' : 'Accept?').catch(() => false) : false);
  if (!accept) {
    if (changed) process.stderr.write('Declined: the key changed.\n');
    else if (!process.stdin.isTTY && !options.yes) process.stderr.write('Declined (not a terminal; use --yes to accept without asking).\n');
    offer.decline();
    if (options.json) printJson({ transferId: offer.transferId, from: senderOf(offer.sender), declined: true, keyChanged: changed });
    return changed ? EXIT_CODES.security : EXIT_CODES.declined;
  }
  const progress = progressPrinter('receiving');
  return reportReceived(offer.transferId, offer.sender, offer.accept({ directory: options.out, onConflict: options.onConflict, onProgress: (p) => progress.update(p), signal }), progress, options.json);
}

const senderOf = (peer: PeerInfo) => ({ peerId: peer.peerId, name: peer.name });

async function reportReceived(transferId: string, sender: PeerInfo, receiving: Promise<ReceiveResult>, progress: ReturnType<typeof progressPrinter>, json: boolean | undefined): Promise<number> {
  try {
    const result = await receiving;
    progress.end();
    if (json) printJson({ transferId, from: senderOf(sender), files: result.files, plainBytes: result.plainBytes, durationMs: Math.round(result.durationMs) });
    else for (const f of result.files) process.stdout.write(`Saved ${f.savedAs} (${formatBytes(f.size)})\n`);
    process.stderr.write(`Received ${formatBytes(result.plainBytes)} ${timeAndRate(result.plainBytes, result.durationMs)}; every chunk verified.\n`);
    return EXIT_CODES.ok;
  } catch (error) {
    progress.end();
    const e = toSftError(error);
    process.stderr.write(`Transfer failed: ${escapeForDisplay(e.message)} (${e.code}). Nothing partial was kept.\n`);
    if (json) printJson({ transferId, from: senderOf(sender), error: e });
    return exitCodeFor(e.code);
  }
}

/** Prints who got what (stdout) and who did not (stderr); returns the exit code. */
function reportSent(result: SendResult, to: readonly PeerInfo[], json: boolean | undefined): number {
  if (json) printJson(result);
  let exit: number = EXIT_CODES.ok;
  for (const r of result.recipients) {
    const name = escapeForDisplay(to.find((p) => p.peerId === r.peerId)?.name ?? r.peerId);
    if (r.outcome === 'done') {
      if (!json) process.stdout.write(`Delivered to ${name}: ${result.files} file(s), ${formatBytes(result.plainBytes)} ${timeAndRate(result.plainBytes, result.durationMs)}.\n`);
    } else if (r.outcome === 'declined') {
      process.stderr.write(`${name} declined.\n`);
      exit = Math.max(exit, EXIT_CODES.declined);
    } else {
      process.stderr.write(`Not delivered to ${name}: ${escapeForDisplay(r.message)} (${r.code})\n`);
      exit = Math.max(exit, exitCodeFor(r.code));
    }
  }
  return exit;
}

/**
 * The journal of an earlier `sft send` of the same paths to the same recipients (by the names or
 * ids given now, in the same order), if it can still be resumed. Journals past the relay's grace
 * period are removed, each with a message.
 */
async function journaledSend(journal: TransferJournal, paths: readonly string[], names: readonly string[], graceMs: number): Promise<OutgoingRecord | undefined> {
  const wanted = paths.map((p) => path.resolve(p));
  const named = names.map((n) => n.toLowerCase());
  let found: OutgoingRecord | undefined;
  for (const record of await journal.outgoing()) {
    if (TransferJournal.isHeldElsewhere(record)) continue; // Another sft send is still sending it.
    if (TransferJournal.isExpired(record, graceMs)) {
      process.stderr.write(`The interrupted transfer ${record.transferId} to ${namesOf(record.recipients)} can no longer be resumed (EXPIRED); its journal was removed.\n`);
      await journal.discard(record);
      continue;
    }
    const samePaths = record.paths.length === wanted.length && record.paths.every((p, i) => p === wanted[i]);
    const sameRecipients =
      record.recipients.length === named.length &&
      record.recipients.every((r, i) => {
        const name = named[i]!;
        return r.peerId === name || (name.length >= 6 && r.peerId.startsWith(name)) || r.name.toLowerCase() === name;
      });
    if (samePaths && sameRecipients) found = record;
  }
  return found;
}

/** The first of `paths` that does not exist, if any. */
async function firstMissing(paths: readonly string[]): Promise<string | undefined> {
  for (const p of paths) {
    try {
      await fs.stat(p);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return p;
      throw toSftError(error);
    }
  }
  return undefined;
}

/** `--json`: one line of JSON on stdout (an SftError serialises itself as {code, message}). */
function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** Recipients' names, for messages (escaped: they are whatever each peer chose). */
function namesOf(peers: readonly PeerInfo[]): string {
  return peers.map((p) => escapeForDisplay(p.name)).join(', ');
}

program()
  .parseAsync(process.argv)
  .catch((error: unknown) => {
    if (error instanceof CommanderError) {
      // Commander has said what was wrong (and shown the help); --help and --version exit 0.
      process.exitCode = error.exitCode === 0 ? EXIT_CODES.ok : EXIT_CODES.usage;
      if (error.exitCode !== 0 && process.argv.includes('--json')) printJson({ error: new SftError('USAGE', error.message.replace(/^error: /, '')) });
      return;
    }
    const e = toSftError(error);
    process.stderr.write(`sft: ${e.message} (${e.code})\n`);
    // A script that asked for JSON gets JSON on failure too.
    if (process.argv.includes('--json')) printJson({ error: e });
    process.exitCode = exitCodeFor(e.code);
  })
  .finally(async () => {
    // Let the relay acknowledge the last answer or receipt before the connection goes.
    await Promise.all([...openClients].map((client) => client.closeGracefully()));
  });
