/**
 * What both VS Code hosts need around the extension-host suite: a real `sft-relay` process that
 * requires a team token, a scratch folder, a workspace folder, and the context file the suite reads
 * (named by SFT_TEST_CONTEXT, which the host passes on to the extension host).
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startRelayProcess } from '../helpers/processes';
import type { SuiteContext } from './suite/context';

export const ROOT = path.resolve(__dirname, '..', '..');
export const SUITE_BUNDLE = path.join(ROOT, 'dist', 'test', 'vscode-suite.js');

export interface SuiteFixture {
  readonly workspace: string;
  readonly env: Record<string, string>;
  readonly relayLog: () => string;
  stop(): Promise<void>;
}

export async function startSuiteFixture(): Promise<SuiteFixture> {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-vscode-'));
  const token = crypto.randomBytes(18).toString('base64url');
  // The token goes to the relay through its environment, never argv.
  const { relay, url } = await startRelayProcess([], { SFT_RELAY_TOKEN: token });
  // A second relay that gives an interrupted transfer only two seconds to resume: for EXPIRED.
  const { relay: shortGrace, url: shortGraceUrl } = await startRelayProcess(['--resume-grace', '2'], { SFT_RELAY_TOKEN: token });
  const workspace = path.join(base, 'workspace');
  const scratch = path.join(base, 'scratch');
  await fs.mkdir(workspace, { recursive: true });
  await fs.mkdir(scratch, { recursive: true });
  await fs.writeFile(path.join(workspace, 'README.txt'), 'A workspace for the Secure File Transfer extension tests.\n');
  const context: SuiteContext = { relayUrl: url, shortGraceRelayUrl: shortGraceUrl, token, scratch };
  const contextFile = path.join(base, 'context.json');
  await fs.writeFile(contextFile, JSON.stringify(context), { mode: 0o600 });
  return {
    workspace,
    env: { SFT_TEST_CONTEXT: contextFile },
    relayLog: () => [...relay.stdout, ...relay.stderr, '--- short-grace relay ---', ...shortGrace.stdout, ...shortGrace.stderr].join('\n'),
    async stop() {
      await Promise.all([relay.stop(), shortGrace.stop()]);
      await fs.rm(base, { recursive: true, force: true });
    },
  };
}
