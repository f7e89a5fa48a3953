/** Writing files that only their owner may read: the key file and the trust book. */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

/**
 * Writes `value` as JSON to `file`, mode 0600 in a 0700 folder, through a uniquely named private
 * temporary file and a rename: the content is never briefly readable by others, a crash never
 * leaves half a file, and two writers never share a temporary name.
 */
export async function writePrivateJson(file: string, value: unknown): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const temp = `${file}.${crypto.randomBytes(6).toString('hex')}.tmp`;
  await fs.writeFile(temp, JSON.stringify(value, null, 2) + '\n', { mode: 0o600, flag: 'wx' });
  try {
    await fs.chmod(temp, 0o600); // Whatever the umask made of the mode above.
    await fs.rename(temp, file);
  } catch (error) {
    await fs.rm(temp, { force: true });
    throw error;
  }
}
