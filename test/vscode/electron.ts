/**
 * Runs the extension-host suite in desktop VS Code through @vscode/test-electron, which downloads
 * VS Code: for machines with internet (this project's CI has none and uses code-server instead,
 * see extension-host.test.ts). Usage: `npm run build && node --import tsx test/vscode/electron.ts`.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runTests } from '@vscode/test-electron';
import { ROOT, SUITE_BUNDLE, startSuiteFixture } from './fixture';

async function main(): Promise<void> {
  const fixture = await startSuiteFixture();
  const userData = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-electron-'));
  try {
    await runTests({
      version: process.env.SFT_VSCODE_VERSION ?? 'stable',
      extensionDevelopmentPath: ROOT,
      extensionTestsPath: SUITE_BUNDLE,
      extensionTestsEnv: fixture.env,
      launchArgs: [fixture.workspace, '--disable-extensions', '--disable-workspace-trust', '--user-data-dir', path.join(userData, 'user'), '--extensions-dir', path.join(userData, 'extensions')],
    });
  } finally {
    await fixture.stop();
    await fs.rm(userData, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
