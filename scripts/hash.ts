import crypto from 'node:crypto';
import { createReadStream } from 'node:fs';

/** SHA-256 of a file, streamed. */
export async function sha256File(file: string): Promise<string> {
  const hash = crypto.createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
