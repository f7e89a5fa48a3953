/**
 * The extension-host test suite, run inside a real VS Code: by code-server here and in CI
 * (test/vscode/extension-host.test.ts), or by @vscode/test-electron where VS Code can be downloaded
 * (test/vscode/electron.ts). Both hosts load this bundle (dist/test/vscode-suite.js) and call run().
 */
import Mocha from 'mocha';
import { registerExtensionTests } from './extension.test';

export function run(): Promise<void> {
  const mocha = new Mocha({ ui: 'bdd', timeout: 60_000, color: false, reporter: 'spec' });
  // The tests are bundled into this file; expose describe/it to them, then let them register.
  mocha.suite.emit('pre-require', globalThis, 'vscode-suite', mocha);
  registerExtensionTests();
  return new Promise((resolve, reject) => {
    mocha.run((failures) => (failures > 0 ? reject(new Error(`${failures} test(s) failed.`)) : resolve()));
  });
}
