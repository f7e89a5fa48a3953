/**
 * What a sender sends: the files and folders the user picked, walked into header entries, and a
 * reader that streams their bytes, in header order, as one payload. Memory stays at one chunk.
 */
import fs from 'node:fs/promises';
import type { Stats } from 'node:fs';
import path from 'node:path';
import { SftError, toSftError } from '../errors';
import { checkReceivedPaths } from '../names';
import type { HeaderEntry } from '../crypto/envelope';

export interface SourceFile {
  readonly absolutePath: string;
  readonly size: number;
  readonly mtimeMs: number;
}

export interface Sources {
  readonly entries: HeaderEntry[];
  /** Parallel to the file entries of `entries`, in order. */
  readonly files: SourceFile[];
  readonly totalBytes: number;
  /** Symbolic links and special files inside folders, which are not sent. */
  readonly skipped: string[];
}

/**
 * Walks the chosen paths. A chosen path that is a link is followed (the user picked it); links
 * inside a chosen folder are skipped, so a folder never drags in files from elsewhere.
 */
export async function collectSources(paths: readonly string[]): Promise<Sources> {
  if (paths.length === 0) throw new SftError('USAGE', 'Nothing to send.');
  const entries: HeaderEntry[] = [];
  const files: SourceFile[] = [];
  const skipped: string[] = [];

  const addFile = (absolutePath: string, relative: string, stat: Stats) => {
    entries.push({ path: relative, type: 'file', size: stat.size, mode: stat.mode & 0o777, mtimeMs: Math.floor(stat.mtimeMs) });
    files.push({ absolutePath, size: stat.size, mtimeMs: stat.mtimeMs });
  };

  const walk = async (dir: string, relative: string): Promise<void> => {
    const children = (await fs.readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    if (children.length === 0) entries.push({ path: relative, type: 'dir', size: 0 });
    for (const child of children) {
      const childPath = path.join(dir, child.name);
      const childRelative = `${relative}/${child.name}`;
      if (child.isDirectory()) await walk(childPath, childRelative);
      else if (child.isFile()) addFile(childPath, childRelative, await fs.stat(childPath));
      else skipped.push(childRelative);
    }
  };

  try {
    for (const chosen of paths) {
      const absolute = path.resolve(chosen);
      const stat = await fs.stat(absolute);
      const name = path.basename(absolute);
      if (stat.isDirectory()) await walk(absolute, name);
      else if (stat.isFile()) addFile(absolute, name, stat);
      else throw new SftError('USAGE', `${name} is neither a file nor a folder.`);
    }
  } catch (error) {
    const e = toSftError(error);
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new SftError('IO', `${(error as NodeJS.ErrnoException).path ?? 'A file'} does not exist.`, error);
    throw e;
  }
  // The receiver will refuse names that are not portable; say so before anything is offered.
  checkReceivedPaths(entries.map((e) => e.path));
  return { entries, files, totalBytes: files.reduce((sum, f) => sum + f.size, 0), skipped };
}

/**
 * Reads the payload: the files' bytes back to back. Each file is checked against the size and
 * modification time it had when the offer was made, when opened and again when finished, so a file
 * that changes while it is sent is reported instead of delivered as something else.
 */
export class PayloadReader {
  private index = -1;
  private handle: fs.FileHandle | undefined;
  private position = 0;

  constructor(private readonly files: readonly SourceFile[]) {}

  /** One buffer for every read: a chunk is sealed (copied) before the next is read. */
  private scratch = Buffer.alloc(0);

  /**
   * Reads exactly `length` bytes (fewer only if the payload ends). The bytes live in a buffer this
   * reader reuses: they are valid until the next call, which saves a chunk-sized allocation (and
   * the garbage collection that follows it) per chunk.
   */
  async read(length: number): Promise<Buffer> {
    if (this.scratch.length < length) this.scratch = Buffer.allocUnsafe(length);
    const out = this.scratch.subarray(0, length);
    let filled = 0;
    while (filled < length) {
      if (!this.handle || this.position === this.files[this.index]!.size) {
        await this.finishCurrent();
        if (!(await this.openNext())) break;
        continue;
      }
      const file = this.files[this.index]!;
      const want = Math.min(length - filled, file.size - this.position);
      const { bytesRead } = await this.handle.read(out, filled, want, this.position);
      if (bytesRead === 0) throw changed(file);
      filled += bytesRead;
      this.position += bytesRead;
    }
    return filled === length ? out : out.subarray(0, filled);
  }

  /** Moves to `offset` bytes into the payload (to resume where the recipient's verified data ends). */
  async seek(offset: number): Promise<void> {
    await this.close();
    this.index = -1;
    let before = 0;
    for (const [i, file] of this.files.entries()) {
      if (offset < before + file.size || (offset === before + file.size && i === this.files.length - 1)) {
        this.index = i - 1;
        await this.openNext();
        this.position = offset - before;
        return;
      }
      before += file.size;
    }
    this.index = this.files.length - 1; // Past the end: nothing left to read.
  }

  /** Checks the last file (and any empty ones after it) once the payload has been read. */
  async end(): Promise<void> {
    await this.finishCurrent();
    while (await this.openNext()) await this.finishCurrent();
  }

  async close(): Promise<void> {
    await this.handle?.close().catch(() => undefined);
    this.handle = undefined;
  }

  private async openNext(): Promise<boolean> {
    this.index += 1;
    this.position = 0;
    const file = this.files[this.index];
    if (!file) return false;
    try {
      this.handle = await fs.open(file.absolutePath, 'r');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new SftError('SOURCE_CHANGED', `${path.basename(file.absolutePath)} was removed while it was being sent.`);
      throw toSftError(error);
    }
    await this.checkUnchanged(file);
    return true;
  }

  private async finishCurrent(): Promise<void> {
    if (!this.handle) return;
    await this.checkUnchanged(this.files[this.index]!);
    await this.close();
  }

  private async checkUnchanged(file: SourceFile): Promise<void> {
    const stat = await this.handle!.stat();
    if (stat.size !== file.size || stat.mtimeMs !== file.mtimeMs) throw changed(file);
  }
}

/**
 * Checks that every file still has the size and modification time recorded when the offer was
 * sealed: before a transfer journaled by another process continues, including the files already
 * delivered, so the recipient never ends up with parts of two versions of a file it cannot tell apart.
 */
export async function checkSourcesUnchanged(files: readonly SourceFile[]): Promise<void> {
  for (const file of files) {
    let stat: Stats;
    try {
      stat = await fs.stat(file.absolutePath);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new SftError('SOURCE_CHANGED', `${path.basename(file.absolutePath)} no longer exists.`);
      throw toSftError(error);
    }
    if (stat.size !== file.size || stat.mtimeMs !== file.mtimeMs) throw changed(file);
  }
}

function changed(file: SourceFile): SftError {
  return new SftError('SOURCE_CHANGED', `${path.basename(file.absolutePath)} changed while it was being sent; it was not delivered.`);
}
