/**
 * Between VS Code URIs and the transfer engine, which streams from and to local paths. `file:`
 * URIs are used in place (streamed, never read whole). Other schemes (virtual and remote file
 * systems) go through `vscode.workspace.fs`, which reads and writes whole files, so they are copied
 * through a private temporary folder and capped by the `maxInMemorySize` setting.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as vscode from 'vscode';
import { SftError } from '../core/errors';
import { formatBytes } from '../core/format';
import { numberedName } from '../core/names';
import { safeText } from './text';

export interface LocalPaths {
  readonly paths: string[];
  /** Whether some paths are temporary copies (of files on a non-`file:` file system). */
  readonly temporary: boolean;
  /** Removes any temporary copies. */
  dispose(): Promise<void>;
}

export async function toLocalPaths(uris: readonly vscode.Uri[], maxInMemory: number): Promise<LocalPaths> {
  const local = uris.filter((u) => u.scheme === 'file').map((u) => u.fsPath);
  const other = uris.filter((u) => u.scheme !== 'file');
  if (other.length === 0) return { paths: local, temporary: false, dispose: async () => undefined };
  const staging = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-send-'));
  const dispose = () => fs.rm(staging, { recursive: true, force: true });
  try {
    let budget = maxInMemory;
    const copy = async (uri: vscode.Uri, target: string): Promise<void> => {
      const stat = await vscode.workspace.fs.stat(uri);
      if (stat.type & vscode.FileType.Directory) {
        await fs.mkdir(target, { mode: 0o700 });
        for (const [name] of await vscode.workspace.fs.readDirectory(uri)) await copy(vscode.Uri.joinPath(uri, name), path.join(target, name));
        return;
      }
      budget -= stat.size;
      if (budget < 0) throw tooLarge(maxInMemory);
      await fs.writeFile(target, await vscode.workspace.fs.readFile(uri), { mode: 0o600 });
    };
    const staged: string[] = [];
    for (const uri of other) {
      const target = path.join(staging, path.posix.basename(uri.path) || 'file');
      await copy(uri, target);
      staged.push(target);
    }
    return { paths: [...local, ...staged], temporary: true, dispose };
  } catch (error) {
    await dispose();
    throw fromFileSystemError(error);
  }
}

/**
 * Copies files received into a local folder onto a non-`file:` destination. An existing file is
 * only replaced when `overwrite` (the user said so in a save dialog); otherwise the copy gets a free
 * name, "name (1).ext". All or nothing: on a failure, what was copied so far is deleted again.
 */
export async function copyToUri(files: readonly string[], root: string, destination: vscode.Uri, overwrite: boolean): Promise<vscode.Uri[]> {
  const written: vscode.Uri[] = [];
  try {
    for (const file of files) {
      const relative = path.relative(root, file).split(path.sep);
      let target = vscode.Uri.joinPath(destination, ...relative);
      if (!overwrite) target = await freeName(target);
      await vscode.workspace.fs.writeFile(target, await fs.readFile(file));
      written.push(target);
    }
    return written;
  } catch (error) {
    await Promise.all(written.map((uri) => vscode.workspace.fs.delete(uri).then(undefined, () => undefined)));
    throw fromFileSystemError(error);
  }
}

/**
 * A virtual or remote file system's error (vscode.FileSystemError, whose codes are not errno
 * names) as a stable code and a message that says what happened, instead of INTERNAL.
 */
function fromFileSystemError(error: unknown): unknown {
  if (!(error instanceof vscode.FileSystemError)) return error;
  const what: Record<string, string> = {
    FileNotFound: 'was not found',
    FileExists: 'already exists',
    FileNotADirectory: 'is not a folder',
    FileIsADirectory: 'is a folder',
    NoPermissions: 'cannot be accessed: permission denied',
    Unavailable: 'is unavailable',
  };
  const code = error.code === 'FileExists' ? 'FILE_EXISTS' : 'IO';
  return new SftError(code, `A file ${what[error.code] ?? `could not be read or written (${safeText(error.code)})`}: ${safeText(error.message)}`, error);
}

async function freeName(target: vscode.Uri): Promise<vscode.Uri> {
  const exists = (uri: vscode.Uri) => vscode.workspace.fs.stat(uri).then(() => true, () => false);
  if (!(await exists(target))) return target;
  const name = path.posix.basename(target.path);
  for (let n = 1; n < 10_000; n++) {
    const candidate = vscode.Uri.joinPath(target, '..', numberedName(name, n));
    if (!(await exists(candidate))) return candidate;
  }
  throw new SftError('FILE_EXISTS', `Could not find a free name for ${name}.`);
}

export function tooLarge(limit: number): SftError {
  return new SftError(
    'FILE_TOO_LARGE',
    `Files outside the local disk are handled whole in memory, up to ${formatBytes(limit)} (setting secureFileTransfer.maxInMemorySize). Save them to a local folder, or raise the limit.`,
  );
}
