/** Typed access to the extension's settings (declared with defaults in package.json). */
import os from 'node:os';
import path from 'node:path';
import * as vscode from 'vscode';
import { parseBytes } from '../core/format';
import { SftError } from '../core/errors';

const SECTION = 'secureFileTransfer';
const config = () => vscode.workspace.getConfiguration(SECTION);

export const settings = {
  relayUrl: (): string => config().get<string>('relayUrl', '').trim(),
  setRelayUrl: (url: string) => config().update('relayUrl', url, vscode.ConfigurationTarget.Global),
  displayName: (): string => config().get<string>('displayName', '').trim() || safeUserName(),
  autoConnect: (): boolean => config().get<boolean>('autoConnect', true),
  downloadFolder: (): string => {
    const configured = config().get<string>('downloadFolder', '').trim();
    if (!configured) return path.join(os.homedir(), 'Downloads');
    return configured.startsWith('~') ? path.join(os.homedir(), configured.slice(1)) : configured;
  },
  relayHost: (): string => config().get<string>('relay.host', '127.0.0.1').trim() || '127.0.0.1',
  relayPort: (): number => config().get<number>('relay.port', 7474),
  relayMaxFileSize: (): number | undefined => {
    const text = config().get<string>('relay.maxFileSize', '').trim();
    if (!text) return undefined;
    // A value that is not a size must not quietly mean "no limit".
    const bytes = parseBytes(text);
    if (bytes === 0) throw new SftError('USAGE', 'The setting secureFileTransfer.relay.maxFileSize is 0, which would refuse every transfer: leave it empty for no limit.');
    if (bytes === undefined) throw new SftError('USAGE', `The setting secureFileTransfer.relay.maxFileSize is not a size: use one such as 2GiB or 500MB, or leave it empty for no limit.`);
    return bytes;
  },
  maxInMemorySize: (): number => parseBytes(config().get<string>('maxInMemorySize', '256MiB')) ?? 256 * 2 ** 20,
  affects: (event: vscode.ConfigurationChangeEvent, key: string) => event.affectsConfiguration(`${SECTION}.${key}`),
};

function safeUserName(): string {
  try {
    return os.userInfo().username || 'VS Code user';
  } catch {
    return 'VS Code user';
  }
}
