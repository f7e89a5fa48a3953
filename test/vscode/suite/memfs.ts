/**
 * A small in-memory file system registered through VS Code's FileSystemProvider API: what virtual
 * and remote workspaces look like to an extension (a scheme other than `file:`), so the suite can
 * check that such files go through `vscode.workspace.fs` and within the size cap.
 */
import * as vscode from 'vscode';

type Entry = { type: vscode.FileType.File; data: Uint8Array; mtime: number } | { type: vscode.FileType.Directory; mtime: number };

export class MemoryFileSystem implements vscode.FileSystemProvider {
  private readonly entries = new Map<string, Entry>([['/', { type: vscode.FileType.Directory, mtime: Date.now() }]]);
  private readonly emitter = new vscode.EventEmitter<vscode.FileChangeEvent[]>();
  readonly onDidChangeFile = this.emitter.event;

  watch(): vscode.Disposable {
    return new vscode.Disposable(() => undefined);
  }

  stat(uri: vscode.Uri): vscode.FileStat {
    const entry = this.get(uri);
    return { type: entry.type, ctime: entry.mtime, mtime: entry.mtime, size: entry.type === vscode.FileType.File ? entry.data.byteLength : 0 };
  }

  readDirectory(uri: vscode.Uri): [string, vscode.FileType][] {
    const prefix = uri.path.endsWith('/') ? uri.path : `${uri.path}/`;
    return [...this.entries]
      .filter(([p]) => p !== '/' && p.startsWith(prefix) && !p.slice(prefix.length).includes('/'))
      .map(([p, e]) => [p.slice(prefix.length), e.type]);
  }

  createDirectory(uri: vscode.Uri): void {
    this.entries.set(uri.path, { type: vscode.FileType.Directory, mtime: Date.now() });
  }

  readFile(uri: vscode.Uri): Uint8Array {
    const entry = this.get(uri);
    if (entry.type !== vscode.FileType.File) throw vscode.FileSystemError.FileIsADirectory(uri);
    return entry.data;
  }

  writeFile(uri: vscode.Uri, content: Uint8Array): void {
    const parent = uri.path.slice(0, uri.path.lastIndexOf('/')) || '/';
    if (!this.entries.has(parent)) throw vscode.FileSystemError.FileNotFound(uri.with({ path: parent }));
    this.entries.set(uri.path, { type: vscode.FileType.File, data: content, mtime: Date.now() });
  }

  delete(uri: vscode.Uri): void {
    this.entries.delete(uri.path);
  }

  rename(from: vscode.Uri, to: vscode.Uri): void {
    const entry = this.get(from);
    this.entries.delete(from.path);
    this.entries.set(to.path, entry);
  }

  private get(uri: vscode.Uri): Entry {
    const entry = this.entries.get(uri.path);
    if (!entry) throw vscode.FileSystemError.FileNotFound(uri);
    return entry;
  }
}
