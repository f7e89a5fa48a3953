/**
 * An extension host that goes away in the middle of a transfer, in a real VS Code window
 * (code-server with the packaged .vsix), with a real `sft-relay` and a real `sft` process at the
 * other end:
 *
 * - receiving: `sft send` sends a 320 MiB file to Bob's window, Bob chooses Save to Downloads, and
 *   once some chunks are verified the test kills Bob's extension host (SIGKILL, as in a crash: no
 *   deactivation). VS Code starts a new one by itself; it reads the journal in its global storage
 *   and, when the sender offers the transfer again, continues without asking, from the chunks
 *   already verified, to a byte-identical file;
 * - sending: Bob right-clicks a 320 MiB file, Send to…, Carol (an `sft receive` process), and
 *   mid-transfer runs "Developer: Reload Window" from the palette (a graceful stop: the extension
 *   deactivates). The new extension host finds the outgoing journal on joining and continues it.
 *
 * (code-server has no "Developer: Restart Extension Host"; that is a desktop command. Its remote
 * extension host is restarted by a crash or a window reload, the two cases here.)
 *
 * That it resumed, rather than started again, is checked by what the user sees (the window's
 * notification names the chunk it continues from, or says Resuming), by the `sft` process, and by
 * the relay's audit log: the same transfer offered twice, the leg that completed carrying fewer
 * bytes than the whole file. Screenshots of every step are kept in .artifacts/vscode/restart.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { closeMenus, explorerRow, extensionHostPids, launchBrowser, notificationRows, notificationToasts, openWindow, rightClickMenuItem, screenshot, startCodeServer, type Browser, type CodeServer, type Page } from '../host/code-server';
import { start, startRelayProcess, waitForLine, type Running } from '../helpers/processes';
import { listTree, sha256File, writeRandomFile } from '../helpers/harness';
import { DEFAULT_CHUNK_SIZE } from '../../extension/core/crypto/stream';
import { ROOT } from './fixture';

const VSIX = path.join(ROOT, 'dist', 'secure-file-transfer.vsix');
const SHOTS = path.join(ROOT, '.artifacts', 'vscode', 'restart');
/** Large enough to be caught in flight: the restart is requested once a few MiB are verified. */
const SIZE = 320 * 2 ** 20 + 4321;
const CHUNKS = Math.ceil(SIZE / DEFAULT_CHUNK_SIZE);
/** Where the extension keeps its journals: its global storage (a folder named after the extension id). */
const EXTENSION_ID = 'secure-file-transfer.secure-file-transfer';

/** The extension's status-bar item, once it says the window sees `n` peers. */
const connectedWith = (page: Page, n: number) => page.locator('.statusbar-item', { hasText: `${n} ${n === 1 ? 'peer' : 'peers'}` }).first();

interface AuditLine {
  event: string;
  transfer?: string;
  cipherBytes?: number;
  code?: string;
}
const readAudit = async (file: string): Promise<AuditLine[]> =>
  (await fs.readFile(file, 'utf8').catch(() => ''))
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as AuditLine);

/** The extension's journal folder in this server: its global storage, under code-server's user data. */
const journalFolder = (server: CodeServer) => path.join(server.userDataDir, 'User', 'globalStorage', EXTENSION_ID, 'transfers');

/** The journals in `folder` of the given kind, parsed (temporary files being replaced are skipped). */
async function journals(folder: string, kind: 'send' | 'receive'): Promise<Array<{ transferId: string; verified?: number; acked?: number }>> {
  const out = [];
  for (const name of await fs.readdir(folder).catch(() => [] as string[])) {
    if (!new RegExp(`^${kind}-.*\\.json$`).test(name)) continue;
    const text = await fs.readFile(path.join(folder, name), 'utf8').catch(() => undefined);
    if (text) out.push(JSON.parse(text) as { transferId: string; verified?: number; acked?: number });
  }
  return out;
}

/**
 * Opens the command palette on `title` and leaves its row ready, so the command can be run the
 * moment the transfer is far enough along. Returns a function that runs it.
 */
async function preparePaletteCommand(page: Page, shots: string, title: string): Promise<() => Promise<void>> {
  const row = page.locator('.quick-input-widget .monaco-list-row', { hasText: title }).first();
  for (let attempt = 1; ; attempt++) {
    await closeMenus(page);
    await page.keyboard.press('Escape');
    await page.keyboard.press('F1');
    const input = page.locator('.quick-input-widget input').first();
    const opened = await input.waitFor({ state: 'visible', timeout: 5_000 }).then(() => true, () => false);
    if (opened) {
      await input.fill(`>${title}`);
      if (await row.waitFor({ state: 'visible', timeout: 10_000 }).then(() => true, () => false)) break;
    }
    if (attempt === 3) assert.fail(`the palette never offered ${title}`);
  }
  await screenshot(page, shots, `palette-${title}`);
  return () => row.click();
}

/** Waits until `check` returns a value, polling; fails with `what` after `timeoutMs`. */
async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Records the text of every notification toast shown from now on (polled), until stopped. */
function watchToasts(page: Page): { seen: Set<string>; stop(): void } {
  const seen = new Set<string>();
  let running = true;
  void (async () => {
    while (running) {
      // Fails while the window reloads: try again.
      for (const text of await notificationToasts(page).allInnerTexts().catch(() => [] as string[])) seen.add(text.replace(/\s+/g, ' '));
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return { seen, stop: () => void (running = false) };
}

interface Setup {
  base: string;
  url: string;
  audit: string;
  relay: Running;
  processes: Running[];
  server: CodeServer;
  browser: Browser;
  page: Page;
  downloads: string;
  project: string;
  identity: (name: string) => string;
  sft: (args: string[]) => Running;
}

/** A relay (with an audit log), Bob's VS Code window connected to it, and a way to run `sft` as someone else. */
async function setUp(name: string): Promise<Setup> {
  await fs.access(VSIX).catch(() => assert.fail(`${VSIX} is missing: run "npm run package" first (npm run test:vscode does).`));
  const base = await fs.mkdtemp(path.join(os.tmpdir(), `sft-restart-${name}-`));
  const audit = path.join(base, 'audit.jsonl');
  // A generous grace: a restarted extension host on a busy machine still comes back in time.
  const { relay, url } = await startRelayProcess(['--audit-log', audit, '--resume-grace', '180']);
  const processes: Running[] = [relay];
  const downloads = path.join(base, 'bob-downloads');
  const project = path.join(base, 'bob-project');
  for (const dir of [downloads, project]) await fs.mkdir(dir, { recursive: true });
  let server: CodeServer | undefined;
  let browser: Browser | undefined;
  try {
    server = await startCodeServer({
      name: `bob-${name}`,
      installVsix: VSIX,
      settings: { 'secureFileTransfer.relayUrl': url, 'secureFileTransfer.displayName': 'Bob', 'secureFileTransfer.downloadFolder': downloads },
    });
    browser = await launchBrowser();
    const page = await openWindow(browser, server, project);
    const identity = (who: string) => path.join(base, `id-${who}`);
    const sft = (args: string[]) => {
      const p = start('sft', [...args, '--relay', url]);
      processes.push(p);
      return p;
    };
    return { base, url, audit, relay, processes, server, browser, page, downloads, project, identity, sft };
  } catch (error) {
    await browser?.close().catch(() => undefined);
    await server?.stop();
    await relay.stop('SIGKILL');
    await fs.rm(base, { recursive: true, force: true });
    throw error;
  }
}

async function tearDown(t: Setup): Promise<void> {
  await t.browser.close().catch(() => undefined);
  await t.server.stop();
  for (const p of t.processes) await p.stop('SIGKILL');
  await fs.rm(t.base, { recursive: true, force: true });
}

const output = (...ps: Running[]) => ps.map((p) => [...p.stdout, ...p.stderr].join('\n')).join('\n---\n');

/**
 * Alice (`sft send`) sends to Bob's window, which saves; mid-transfer Bob's extension host is
 * killed (`kill`) or Bob reloads the window (`reload`); the next extension host finishes the job.
 */
async function receiveAcrossRestart(how: 'kill' | 'reload'): Promise<void> {
  const shots = path.join(SHOTS, `receive-${how}`);
  await fs.rm(shots, { recursive: true, force: true });
  const t = await setUp(`receive-${how}`);
  const { page } = t;
  try {
    const source = path.join(t.base, 'alice', 'big.bin');
    const sum = await writeRandomFile(source, SIZE, 'exthost-receive');
    await connectedWith(page, 0).waitFor({ state: 'visible', timeout: 60_000 });
    const journalDir = journalFolder(t.server);

    // Alice, on the command line, sends the file to Bob.
    const alice = t.sft(['send', source, '--to', 'Bob', '--name', 'Alice', '--identity', t.identity('alice')]);
    const offer = notificationToasts(page).filter({ hasText: 'wants to send you big.bin' }).first();
    await offer.waitFor({ state: 'visible', timeout: 60_000 });
    assert.match(await offer.innerText(), /Alice \(not verified\) wants to send you big\.bin \(336 MB\)/);
    await page.waitForTimeout(400);
    await screenshot(page, shots, 'bob-sees-offer');
    await offer.locator('.monaco-button', { hasText: 'Save to Downloads' }).first().click();
    await notificationToasts(page).filter({ hasText: 'Receiving big.bin from Alice' }).first().waitFor({ state: 'visible', timeout: 30_000 });

    // Once some chunks are verified and journaled, Bob's extension host goes away.
    const reload = how === 'reload' ? await preparePaletteCommand(page, shots, 'Developer: Reload Window') : undefined;
    const before = await until('Bob\'s journal to record verified chunks', async () => {
      const [record] = await journals(journalDir, 'receive');
      return record && (record.verified ?? 0) >= 8 ? record : undefined;
    }, 60_000, 5);
    const hosts = extensionHostPids(t.server);
    assert.equal(hosts.length, 1, `one extension host for one window: ${hosts.join(', ')}`);
    // Alice is frozen (SIGSTOP) until Bob's new extension host is up, so the restart always lands
    // in the middle of the transfer, however fast this machine moves the file.
    alice.child.kill('SIGSTOP');
    if (reload) {
      // A graceful stop: the extension deactivates, and must leave the transfer to the next host.
      await reload();
      await page.locator('.monaco-workbench').waitFor({ state: 'visible', timeout: 60_000 });
      await screenshot(page, shots, 'bob-reloaded');
    } else {
      // SIGKILL: no deactivation, nothing cleaned up, as in a crash; VS Code starts a new one by itself.
      process.kill(hosts[0]!, 'SIGKILL');
      await until('the extension host to die', async () => (extensionHostPids(t.server).includes(hosts[0]!) ? undefined : true), 10_000);
      // The workbench says so in the status bar (not asserted: it shows for a few seconds only).
      await page.getByText('extension host terminated unexpectedly').first().waitFor({ state: 'visible', timeout: 10_000 }).catch(() => undefined);
      await screenshot(page, shots, 'bob-extension-host-killed');
    }
    const verifiedBefore = before.verified!;
    assert.ok(verifiedBefore < CHUNKS, 'stopped before the end');
    const restarted = await until('a new extension host', async () => extensionHostPids(t.server).find((pid) => pid !== hosts[0]), 60_000, 100);
    assert.ok(restarted);
    alice.child.kill('SIGCONT');

    // The new extension host connects, reads the journal and continues without asking.
    const resumed = notificationToasts(page).filter({ hasText: /Resuming big\.bin from Alice \(chunk \d+ of \d+\)/ }).first();
    await resumed.waitFor({ state: 'visible', timeout: 120_000 });
    await screenshot(page, shots, 'bob-resuming');
    const [, from, of] = /chunk (\d+) of (\d+)/.exec(await resumed.innerText())!;
    assert.equal(Number(of), CHUNKS);
    assert.ok(Number(from) >= verifiedBefore && Number(from) > 0, `continued from chunk ${from}, at least the ${verifiedBefore} journaled before the restart`);
    assert.ok(Number(from) < CHUNKS, `chunk ${from} of ${of}: the restart interrupted the transfer`);
    assert.equal(await offer.isVisible(), false, 'no second offer');

    const saved = notificationToasts(page).filter({ hasText: 'every chunk verified' }).first();
    await saved.waitFor({ state: 'visible', timeout: 240_000 });
    assert.match(await saved.innerText(), /Saved big\.bin \(336 MB\) from Alice/);
    await page.waitForTimeout(400);
    await screenshot(page, shots, 'bob-saved');

    assert.equal(await alice.exited, 0, output(alice));
    const [, aliceFrom] = await waitForLine(alice.stderr, /Resuming transfer \S+ from chunk (\d+) of/);
    assert.equal(Number(aliceFrom), Number(from), 'the sender continued where Bob\'s window said it would');
    assert.match(alice.stdout.join('\n'), /Delivered to Bob/);
    assert.equal(await sha256File(path.join(t.downloads, 'big.bin')), sum, 'the saved file is byte-identical');
    assert.deepEqual(await listTree(t.downloads), ['big.bin'], 'nothing partial is left');
    assert.deepEqual(await journals(journalDir, 'receive'), [], 'Bob\'s journal is gone');

    // The relay saw the transfer offered twice; the second leg carried only what was missing.
    const lines = await readAudit(t.audit);
    const offers = lines.filter((l) => l.event === 'offer');
    assert.equal(offers.length, 2, JSON.stringify(lines));
    assert.equal(offers[0]!.transfer, offers[1]!.transfer, 'the same transfer, offered again');
    const complete = lines.filter((l) => l.event === 'complete');
    assert.equal(complete.length, 1, JSON.stringify(lines));
    assert.ok(complete[0]!.cipherBytes! < offers[1]!.cipherBytes!, `the resumed leg relayed ${complete[0]!.cipherBytes} of ${offers[1]!.cipherBytes} bytes`);
  } catch (error) {
    await screenshot(page, shots, 'failed').catch(() => undefined);
    throw new Error(`${(error as Error).message}\n--- processes ---\n${output(...t.processes.slice(1))}`, { cause: error });
  } finally {
    await tearDown(t);
  }
}

test('Bob\'s extension host is killed while receiving: VS Code restarts it and the file arrives whole, resumed from the journal', { timeout: 480_000 }, () => receiveAcrossRestart('kill'));

test('Bob reloads his window while receiving: the new extension host finishes the file from the journal, without asking again', { timeout: 480_000 }, () => receiveAcrossRestart('reload'));

test('Bob reloads his window while sending: the new extension host carries the transfer to the end from the journal', { timeout: 480_000 }, async () => {
  const shots = path.join(SHOTS, 'send');
  await fs.rm(shots, { recursive: true, force: true });
  const t = await setUp('send');
  const { page } = t;
  let stopWatching = () => undefined as void;
  try {
    const source = path.join(t.project, 'big.bin');
    const sum = await writeRandomFile(source, SIZE, 'exthost-send');
    await connectedWith(page, 0).waitFor({ state: 'visible', timeout: 60_000 });
    const journalDir = journalFolder(t.server);

    // Carol receives on the command line, accepting whatever comes.
    const out = path.join(t.base, 'carol-out');
    const carol = t.sft(['receive', '--out', out, '--yes', '--once', '--name', 'Carol', '--identity', t.identity('carol')]);
    await waitForLine(carol.stderr, /Waiting for files/, 30_000);
    await connectedWith(page, 1).waitFor({ state: 'visible', timeout: 60_000 });

    // Bob: right-click the file, Send to…, Carol.
    const row = explorerRow(page, 'big.bin');
    // Written after the window opened: should the Explorer's file watcher miss it (it did once in
    // 30 s), the Explorer is refreshed, as a person would.
    for (let attempt = 1; !(await row.waitFor({ state: 'visible', timeout: 10_000 }).then(() => true, () => false)); attempt++) {
      if (attempt === 3) assert.fail('big.bin never appeared in the Explorer');
      await (await preparePaletteCommand(page, shots, 'File: Refresh Explorer'))();
    }
    const carolItem = page.locator('.quick-input-widget .monaco-list-row', { hasText: 'Carol' }).first();
    for (let attempt = 1; ; attempt++) {
      await rightClickMenuItem(page, row, 'Send to…');
      if (await carolItem.waitFor({ state: 'visible', timeout: 8_000 }).then(() => true, () => false)) break;
      if (attempt === 3) assert.fail('Send to… never opened the recipient picker');
    }
    await screenshot(page, shots, 'bob-picks-carol');
    await carolItem.click();
    await notificationToasts(page).filter({ hasText: 'Sending big.bin to Carol' }).first().waitFor({ state: 'visible', timeout: 30_000 });

    const reload = await preparePaletteCommand(page, shots, 'Developer: Reload Window');
    const receiving = await until('Carol to receive some chunks', async () => {
      const partial = (await listTree(out).catch(() => [] as string[])).find((f) => f.endsWith('.sft-partial'));
      if (!partial) return undefined;
      const size = (await fs.stat(path.join(out, partial)).catch(() => undefined))?.size ?? 0;
      return size >= 8 * DEFAULT_CHUNK_SIZE ? size : undefined;
    }, 60_000, 5);
    const [journal] = await journals(journalDir, 'send');
    assert.ok(journal, 'Bob\'s window journals the transfer it sends');
    // Carol is frozen (SIGSTOP) until Bob's window is back, so the reload always lands in the
    // middle of the transfer, however fast this machine moves the file.
    carol.child.kill('SIGSTOP');
    await reload();
    assert.ok(receiving < SIZE, 'the reload came before the end');
    await page.locator('.monaco-workbench').waitFor({ state: 'visible', timeout: 60_000 });
    carol.child.kill('SIGCONT');
    await screenshot(page, shots, 'bob-reloaded');

    // The new extension host finds the outgoing journal when it joins, and continues. Its progress
    // notification lasts only as long as the rest of the transfer: watch the toasts from now on.
    const toasts = watchToasts(page);
    stopWatching = toasts.stop;
    await until('the resumed transfer\'s notification', async () => ([...toasts.seen].some((text) => text.includes('Resuming big.bin to Carol')) ? true : undefined), 120_000, 100);
    await screenshot(page, shots, 'bob-resuming');
    assert.equal(await carol.exited, 0, output(carol));
    toasts.stop();
    // "Delivered" has no buttons, so its toast hides by itself: read it from the Notification Center.
    const delivered = (await notificationRows(page)).filter({ hasText: 'Delivered big.bin' }).first();
    await delivered.waitFor({ state: 'visible', timeout: 60_000 });
    assert.match(await delivered.innerText(), /Delivered big\.bin \(336 MB\) to Carol/);
    await page.waitForTimeout(400);
    await screenshot(page, shots, 'bob-delivered');
    assert.ok(![...toasts.seen].some((text) => /Could not|Sending big\.bin to Carol/.test(text) && !text.includes('Resuming')), `no error, and no fresh send: ${[...toasts.seen].join(' | ')}`);

    assert.equal(await sha256File(path.join(out, 'big.bin')), sum, 'Carol has the file, byte-identical');
    assert.deepEqual(await listTree(out), ['big.bin'], 'nothing partial is left');
    assert.deepEqual(await journals(journalDir, 'send'), [], 'Bob\'s outgoing journal is gone');

    const lines = await readAudit(t.audit);
    const offers = lines.filter((l) => l.event === 'offer');
    assert.equal(offers.length, 2, JSON.stringify(lines));
    assert.equal(offers[0]!.transfer, journal.transferId);
    assert.equal(offers[1]!.transfer, journal.transferId, 'the same transfer, offered again by the new extension host');
    const complete = lines.filter((l) => l.event === 'complete');
    assert.equal(complete.length, 1, JSON.stringify(lines));
    assert.ok(complete[0]!.cipherBytes! > 0 && complete[0]!.cipherBytes! < offers[1]!.cipherBytes!, `the resumed leg relayed ${complete[0]!.cipherBytes} of ${offers[1]!.cipherBytes} bytes, not the whole file again`);
  } catch (error) {
    await screenshot(page, shots, 'failed').catch(() => undefined);
    throw new Error(`${(error as Error).message}\n--- processes ---\n${output(...t.processes.slice(1))}`, { cause: error });
  } finally {
    stopWatching();
    await tearDown(t);
  }
});
