/**
 * Runs the extension-host suite (test/vscode/suite) inside a real VS Code: code-server with its
 * Node extension host, driven by Chromium, against a real relay process. Nothing is skipped: if
 * code-server or Chromium is missing, this fails and says what to install (see test/host/README.md).
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { runExtensionSuite } from '../host/code-server';
import { ROOT, SUITE_BUNDLE, startSuiteFixture } from './fixture';

const ARTIFACTS = path.join(ROOT, '.artifacts', 'vscode');

test('the extension-host suite passes in a real VS Code (code-server)', { timeout: 300_000 }, async () => {
  const fixture = await startSuiteFixture();
  try {
    const result = await runExtensionSuite({
      extensionPath: ROOT,
      testsPath: SUITE_BUNDLE,
      workspace: fixture.workspace,
      env: fixture.env,
      screenshotDir: path.join(ARTIFACTS, 'suite'),
      timeoutMs: 240_000,
    });
    const report = result.log.join('\n');
    process.stdout.write(`${report}\n`);
    assert.equal(result.code, 0, `the suite failed inside VS Code${result.screenshot ? ` (screenshot: ${result.screenshot})` : ''}:\n${report}\n--- relay ---\n${fixture.relayLog()}`);
    // The suite really ran: mocha's summary names the passing tests, none pending (skipped).
    assert.match(report, /\d+ passing/);
    assert.doesNotMatch(report, /\d+ pending/);
  } finally {
    await fixture.stop();
  }
});
