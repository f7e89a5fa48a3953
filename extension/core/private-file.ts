/** Writing files that only their owner may read: the key file and the trust book. */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

/**
 * Writes `value` as JSON to `file`, mode 0600 in a 0700 folder, through a uniquely named private
 * temporary file and a rename: the content is never briefly readable by others, a crash never
 * leaves half a file, and two writers never share a temporary name. The data is synced before the
 * rename and the folder after it, so that after a power loss the file holds either the old content
 * or the new one, never nothing (without the first sync, a file system may commit the rename
 * before the data).
 */
export async function writePrivateJson(file: string, value: unknown): Promise<void> {
  const folder = path.dirname(file);
  await fs.mkdir(folder, { recursive: true, mode: 0o700 });
  const temp = `${file}.${crypto.randomBytes(6).toString('hex')}.tmp`;
  const handle = await fs.open(temp, 'wx', 0o600);
  try {
    try {
      await handle.writeFile(JSON.stringify(value, null, 2) + '\n');
      await handle.chmod(0o600); // Whatever the umask made of the mode above.
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(temp, file);
  } catch (error) {
    await fs.rm(temp, { force: true });
    throw error;
  }
  await syncFolder(folder);
}

/**
 * Makes a rename in `folder` durable. Best effort: Windows cannot open a folder for syncing (NTFS
 * journals renames itself), and some file systems refuse to sync one; neither loses the new file.
 */
async function syncFolder(folder: string): Promise<void> {
  if (process.platform === 'win32') return;
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(folder, 'r');
    await handle.sync();
  } catch {
    // See above.
  } finally {
    await handle?.close().catch(() => undefined);
  }
}
