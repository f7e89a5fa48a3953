/**
 * The test host itself: a throwaway extension, run through code-server the way the real
 * extension's suites are, must pass when its suite passes and fail when its suite throws; and a
 * person's right-click on an Explorer row must reach the extension's command.
 *
 *   node --import tsx --test test/host/host.test.ts
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  blockedRequests,
  explorerRow,
  launchBrowser,
  notificationRows,
  notificationToasts,
  openWindow,
  rightClickMenuItem,
  runExtensionSuite,
  screenshot,
  startCodeServer,
} from './code-server';

const ARTIFACTS = path.resolve(__dirname, '..', '..', '.artifacts', 'host');

const EXTENSION_MANIFEST = {
  name: 'hostcheck',
  publisher: 'sft-test',
  version: '0.0.1',
  license: 'MIT',
  engines: { vscode: '^1.90.0' },
  main: './extension.js',
  activationEvents: ['onStartupFinished'],
  contributes: {
    commands: [{ command: 'hostcheck.ping', title: 'Ping', category: 'Host check' }],
    menus: { 'explorer/context': [{ command: 'hostcheck.ping', when: '!explorerResourceIsFolder' }] },
  },
};

const EXTENSION_MAIN = `
const vscode = require('vscode');
exports.activate = (context) => {
  context.subscriptions.push(vscode.commands.registerCommand('hostcheck.ping', (uri) => {
    const reply = { pong: true, context: process.env.SFT_TEST_CONTEXT, file: uri && uri.fsPath };
    vscode.window.showInformationMessage('hostcheck pong ' + (uri ? require('path').basename(uri.fsPath) : ''));
    return reply;
  }));
};
`;

// The suite entry, as @vscode/test-electron would load it: run() resolves to pass, rejects to fail.
const SUITE = `
const assert = require('assert');
const fs = require('fs');
const vscode = require('vscode');
exports.run = async () => {
  // Suites start before onStartupFinished.
  await vscode.extensions.getExtension('sft-test.hostcheck').activate();
  const contextFile = process.env.SFT_TEST_CONTEXT;
  assert.ok(contextFile, 'SFT_TEST_CONTEXT is not set in the extension host');
  const context = JSON.parse(fs.readFileSync(contextFile, 'utf8'));
  const reply = await vscode.commands.executeCommand('hostcheck.ping');
  assert.deepStrictEqual(reply, { pong: true, context: contextFile, file: undefined });
  assert.strictEqual(vscode.workspace.workspaceFolders[0].uri.fsPath, context.workspace);
  console.log('hostcheck: pong, node ' + process.version);
  if (context.fail) throw new Error('hostcheck: failing on purpose');
};
`;

let tmp: string;
let extensionPath: string;
let testsPath: string;
let workspace: string;

function writeContext(name: string, context: Record<string, unknown>): string {
  const file = path.join(tmp, `${name}.json`);
  fs.writeFileSync(file, JSON.stringify({ workspace, ...context }));
  return file;
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-hostcheck-'));
  extensionPath = path.join(tmp, 'extension');
  workspace = path.join(tmp, 'workspace');
  fs.mkdirSync(path.join(extensionPath, 'suite'), { recursive: true });
  fs.mkdirSync(workspace);
  fs.writeFileSync(path.join(extensionPath, 'package.json'), JSON.stringify(EXTENSION_MANIFEST, null, 2));
  fs.writeFileSync(path.join(extensionPath, 'extension.js'), EXTENSION_MAIN);
  testsPath = path.join(extensionPath, 'suite', 'index.js');
  fs.writeFileSync(testsPath, SUITE);
  fs.writeFileSync(path.join(workspace, 'hello.txt'), 'hello\n');
});

after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('a passing suite exits 0, and the extension host sees the env it was given', async () => {
  const started = Date.now();
  const result = await runExtensionSuite({
    extensionPath,
    testsPath,
    workspace,
    env: { SFT_TEST_CONTEXT: writeContext('pass', {}) },
    screenshotDir: path.join(ARTIFACTS, 'suite-pass'),
  });
  console.log(`suite run took ${Date.now() - started} ms`);
  assert.equal(result.code, 0, result.log.join('\n'));
  assert.ok(result.log.some((line) => /hostcheck: pong, node v24\./.test(line)), `no pong in the host log:\n${result.log.join('\n')}`);
});

test('a suite that throws exits 1', async () => {
  const result = await runExtensionSuite({
    extensionPath,
    testsPath,
    workspace,
    env: { SFT_TEST_CONTEXT: writeContext('fail', { fail: true }) },
    screenshotDir: path.join(ARTIFACTS, 'suite-fail'),
  });
  assert.equal(result.code, 1, result.log.join('\n'));
  assert.ok(result.log.some((line) => line.includes('failing on purpose')), `the failure is not in the host log:\n${result.log.join('\n')}`);
  assert.ok(result.screenshot && fs.existsSync(result.screenshot), 'no screenshot of the failed run');
});

test('a right-click in the Explorer reaches the extension, and its message shows', async () => {
  const shots = path.join(ARTIFACTS, 'ui');
  const server = await startCodeServer({ smoke: true, name: 'ui' });
  const browser = await launchBrowser();
  try {
    const page = await openWindow(browser, server, workspace, { extensionDevelopmentPath: extensionPath });
    const row = explorerRow(page, 'hello.txt');
    await row.waitFor();
    await screenshot(page, shots, 'workbench');
    // A person whose click did not take clicks again: so does the test, up to three times.
    for (let attempt = 1; ; attempt++) {
      await rightClickMenuItem(page, row, 'Ping');
      const rows = await notificationRows(page);
      const shown = await rows.filter({ hasText: 'hostcheck pong hello.txt' }).waitFor({ timeout: 10_000 }).then(() => true, () => false);
      if (shown) break;
      if (attempt === 3) assert.fail('the Ping command never showed its message');
      await page.keyboard.press('Escape');
    }
    await screenshot(page, shots, 'notification');
    assert.deepEqual(blockedRequests.filter((url) => !url.startsWith('chrome')), [], 'the workbench tried to reach the internet');
  } finally {
    await browser.close();
    await server.stop();
  }
});

test('a packaged .vsix installs, and its message shows as a toast', async () => {
  const shots = path.join(ARTIFACTS, 'vsix');
  const vsix = path.join(tmp, 'hostcheck.vsix');
  const vsce = path.resolve(__dirname, '..', '..', 'node_modules', '@vscode', 'vsce', 'vsce');
  const packed = spawnSync(process.execPath, [vsce, 'package', '--allow-missing-repository', '--skip-license', '-o', vsix], { cwd: extensionPath, encoding: 'utf8' });
  assert.equal(packed.status, 0, `${packed.stdout}\n${packed.stderr}`);
  const server = await startCodeServer({ installVsix: vsix, name: 'vsix' });
  const browser = await launchBrowser();
  try {
    const page = await openWindow(browser, server, workspace);
    const row = explorerRow(page, 'hello.txt');
    await row.waitFor();
    await rightClickMenuItem(page, row, 'Ping');
    await notificationToasts(page).filter({ hasText: 'hostcheck pong hello.txt' }).waitFor();
    await screenshot(page, shots, 'toast');
  } finally {
    await browser.close();
    await server.stop();
  }
});
