/**
 * What the host-side runner tells the suite: the relay it started (a real `sft-relay` process) and
 * folders to work in. Passed as a JSON file named by SFT_TEST_CONTEXT, which code-server hands on
 * to the extension host.
 */
import fs from 'node:fs';

export interface SuiteContext {
  /** A running relay that requires `token`. */
  readonly relayUrl: string;
  /** A relay with the same token whose resume grace is two seconds (--resume-grace 2). */
  readonly shortGraceRelayUrl: string;
  readonly token: string;
  /** A scratch folder for files to send and receive. */
  readonly scratch: string;
}

export function suiteContext(): SuiteContext {
  const file = process.env.SFT_TEST_CONTEXT;
  if (!file) throw new Error('SFT_TEST_CONTEXT is not set: run the suite through test/vscode/extension-host.test.ts or test/vscode/electron.ts.');
  return JSON.parse(fs.readFileSync(file, 'utf8')) as SuiteContext;
}
