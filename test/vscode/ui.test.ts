/**
 * What a person does, in Chromium, with the packaged extension (.vsix) installed in two VS Code
 * windows (two code-server instances, separate user data) and a relay: in window A, right-click a
 * file in the Explorer, Send to…, pick Bob; in window B the notification appears, Save… opens the
 * save dialog, the file is saved and is byte-identical. Screenshots of every step are kept in
 * .artifacts/vscode/ui for a reviewer.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { explorerRow, launchBrowser, notificationToasts, openWindow, rightClickMenuItem, screenshot, startCodeServer, type Browser, type CodeServer, type Page } from '../host/code-server';
import { startRelayProcess } from '../helpers/processes';
import { ROOT } from './fixture';

const VSIX = path.join(ROOT, 'dist', 'secure-file-transfer.vsix');
const SHOTS = path.join(ROOT, '.artifacts', 'vscode', 'ui');
const FILE = 'quarterly-report.bin';

const sha256 = async (file: string) => crypto.createHash('sha256').update(await fs.readFile(file)).digest('hex');

/** The extension's status-bar item, once it says the window sees `n` peers. */
const connectedWith = (page: Page, n: number) => page.locator('.statusbar-item', { hasText: `${n} ${n === 1 ? 'peer' : 'peers'}` }).first();

test('send a file from one VS Code window to another, as a person would', { timeout: 300_000 }, async () => {
  await fs.access(VSIX).catch(() => assert.fail(`${VSIX} is missing: run "npm run package" first (npm run test:vscode does).`));
  await fs.rm(SHOTS, { recursive: true, force: true });
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-ui-'));
  const { relay, url } = await startRelayProcess();
  const servers: CodeServer[] = [];
  const pages: Page[] = [];
  let browser: Browser | undefined;
  try {
    const folderA = path.join(base, 'alice-project');
    const folderB = path.join(base, 'bob-project');
    const downloadsB = path.join(base, 'bob-downloads');
    for (const dir of [folderA, folderB, downloadsB]) await fs.mkdir(dir, { recursive: true });
    const source = path.join(folderA, FILE);
    await fs.writeFile(source, crypto.randomBytes(5 * 2 ** 20 + 321));
    await fs.writeFile(path.join(folderB, 'notes.md'), '# Bob\n');

    const settings = (name: string, downloads: string) => ({
      'secureFileTransfer.relayUrl': url,
      'secureFileTransfer.displayName': name,
      'secureFileTransfer.downloadFolder': downloads,
    });
    const [a, b] = await Promise.all([
      startCodeServer({ name: 'alice', installVsix: VSIX, settings: settings('Alice', path.join(base, 'alice-downloads')) }),
      startCodeServer({ name: 'bob', installVsix: VSIX, settings: settings('Bob', downloadsB) }),
    ]);
    servers.push(a!, b!);
    browser = await launchBrowser();
    const pageA = await openWindow(browser, a!, folderA);
    const pageB = await openWindow(browser, b!, folderB);
    pages.push(pageA, pageB);

    // Both windows connect on start-up (a relay URL is set) and see each other.
    await connectedWith(pageA, 1).waitFor({ state: 'visible', timeout: 60_000 });
    await connectedWith(pageB, 1).waitFor({ state: 'visible', timeout: 60_000 });
    await screenshot(pageA, SHOTS, 'alice-connected');
    await screenshot(pageB, SHOTS, 'bob-connected');

    // Window A: right-click the file in the Explorer, Send to…, pick Bob.
    const row = explorerRow(pageA, FILE);
    await row.waitFor({ state: 'visible', timeout: 30_000 });
    const bobItem = pageA.locator('.quick-input-widget .monaco-list-row', { hasText: 'Bob' }).first();
    // A click that lands while the context menu is still opening is ignored by the workbench: if no
    // picker follows, right-click again, as a person would.
    for (let attempt = 1; ; attempt++) {
      await rightClickMenuItem(pageA, row, 'Send to…');
      const shown = await bobItem.waitFor({ state: 'visible', timeout: 8_000 }).then(() => true, () => false);
      if (shown) break;
      if (attempt === 3) assert.fail('Send to… never opened the recipient picker');
    }
    await screenshot(pageA, SHOTS, 'alice-picks-bob');
    await bobItem.click();

    // Window B: the offer arrives as a notification naming Alice, the file and its size.
    const offer = notificationToasts(pageB).filter({ hasText: `wants to send you ${FILE}` }).first();
    await offer.waitFor({ state: 'visible', timeout: 30_000 });
    const offerText = await offer.innerText();
    assert.match(offerText, /Alice \(not verified\) wants to send you quarterly-report\.bin \(5\.\d+ MB\)/);
    await pageB.waitForTimeout(400); // let the toast finish sliding in
    await screenshot(pageB, SHOTS, 'bob-sees-offer');
    await offer.locator('.monaco-button', { hasText: 'Save…' }).first().click();

    // The save dialog (VS Code's own, in a browser window) proposes the download folder.
    const dialogInput = pageB.locator('.quick-input-widget input').first();
    await dialogInput.waitFor({ state: 'visible', timeout: 15_000 });
    await pageB.waitForTimeout(500);
    await screenshot(pageB, SHOTS, 'bob-save-dialog');
    const target = path.join(downloadsB, 'report-from-alice.bin');
    await dialogInput.fill(target);
    // The dialog completes paths as they are typed; let it settle, then press its OK button (retried:
    // an OK pressed while it is still listing the folder is ignored).
    const ok = pageB.locator('.quick-input-widget .monaco-button', { hasText: 'OK' }).first();
    for (let attempt = 0; attempt < 5 && (await dialogInput.isVisible()); attempt++) {
      await pageB.waitForTimeout(500);
      if (await ok.isVisible()) await ok.click().catch(() => undefined);
      await pageB.waitForTimeout(1000);
    }

    // Saved, verified, with Open and Reveal offered.
    const saved = notificationToasts(pageB).filter({ hasText: 'every chunk verified' }).first();
    await saved.waitFor({ state: 'visible', timeout: 60_000 });
    assert.match(await saved.innerText(), /Saved report-from-alice\.bin/);
    await saved.locator('.monaco-button', { hasText: 'Open' }).first().waitFor({ state: 'visible' });
    await pageB.waitForTimeout(400);
    await screenshot(pageB, SHOTS, 'bob-saved');
    const delivered = notificationToasts(pageA).filter({ hasText: 'Delivered quarterly-report.bin' }).first();
    await delivered.waitFor({ state: 'visible', timeout: 30_000 });
    await pageA.waitForTimeout(400);
    await screenshot(pageA, SHOTS, 'alice-delivered');

    // The Secure Transfer views: Bob sees Alice online and the finished transfer.
    await pageB.locator('.activitybar .action-item a[aria-label^="Secure Transfer"]').first().click();
    const alice = pageB.locator('.pane-body .monaco-list-row', { hasText: 'Alice' }).first();
    await alice.waitFor({ state: 'visible', timeout: 15_000 });
    const transfer = pageB.locator('.pane-body .monaco-list-row', { hasText: FILE }).filter({ hasText: 'from Alice' }).first();
    await transfer.waitFor({ state: 'visible', timeout: 15_000 });
    assert.match(await transfer.innerText(), /from Alice .* saved/);
    await screenshot(pageB, SHOTS, 'bob-views');

    assert.equal(await sha256(target), await sha256(source), 'the saved file is byte-identical');
    assert.deepEqual((await fs.readdir(downloadsB)).sort(), ['report-from-alice.bin'], 'nothing else was written');
  } catch (error) {
    // What each window showed when it went wrong, for whoever reads the CI artefacts.
    for (const [i, page] of pages.entries()) await screenshot(page, SHOTS, `failed-window-${i === 0 ? 'alice' : 'bob'}`).catch(() => undefined);
    throw error;
  } finally {
    await browser?.close().catch(() => undefined);
    await Promise.all(servers.map((s) => s.stop()));
    await relay.stop();
    await fs.rm(base, { recursive: true, force: true });
  }
});

test('start and stop the relay from the command palette', { timeout: 180_000 }, async () => {
  await fs.access(VSIX).catch(() => assert.fail(`${VSIX} is missing: run "npm run package" first (npm run test:vscode does).`));
  const shots = path.join(SHOTS, 'palette');
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-ui-relay-'));
  // Port 0: any free port, so parallel runs never collide.
  const server = await startCodeServer({ name: 'relay', installVsix: VSIX, settings: { 'secureFileTransfer.relay.port': 0, 'secureFileTransfer.displayName': 'Carol' } });
  let browser: Browser | undefined;
  let page: Page | undefined;
  const runCommand = async (title: string) => {
    await page!.keyboard.press('F1');
    const input = page!.locator('.quick-input-widget input').first();
    await input.waitFor({ state: 'visible' });
    await input.fill(`>${title}`);
    const row = page!.locator('.quick-input-widget .monaco-list-row', { hasText: title }).first();
    await row.waitFor({ state: 'visible', timeout: 15_000 });
    await screenshot(page!, shots, `palette-${title}`);
    await row.click();
  };
  try {
    await fs.mkdir(path.join(base, 'project'));
    browser = await launchBrowser();
    page = await openWindow(browser, server, path.join(base, 'project'));
    await page.locator('.activitybar .action-item a[aria-label^="Secure Transfer"]').first().waitFor({ state: 'visible', timeout: 60_000 });

    await runCommand('Secure Transfer: Start Relay');
    const running = notificationToasts(page).filter({ hasText: 'Relay running at' }).first();
    await running.waitFor({ state: 'visible', timeout: 30_000 });
    const text = await running.innerText();
    const [, url] = /Relay running at (http:\/\/[^\s]+?)\.(\s|$)/.exec(text) ?? [];
    assert.ok(url, `the message names the relay's address: ${text}`);
    assert.match(text, /this machine only/, 'it says a loopback relay serves only this machine');
    await connectedWith(page, 0).waitFor({ state: 'visible', timeout: 30_000 });
    await page.waitForTimeout(400);
    await screenshot(page, shots, 'relay-running');
    // A real relay answers on that address.
    const health = (await (await fetch(`${url}/healthz`)).json()) as { ok: boolean };
    assert.equal(health.ok, true);

    await runCommand('Secure Transfer: Stop Relay');
    await page.locator('.statusbar-item', { hasText: 'Secure Transfer' }).first().waitFor({ state: 'visible', timeout: 15_000 });
    await screenshot(page, shots, 'relay-stopped');
    await assert.rejects(fetch(`${url}/healthz`), 'the port is closed');
  } catch (error) {
    if (page) await screenshot(page, shots, 'failed').catch(() => undefined);
    throw error;
  } finally {
    await browser?.close().catch(() => undefined);
    await server.stop();
    await fs.rm(base, { recursive: true, force: true });
  }
});
