/**
 * The baselines: a plain TCP relay with no protocol, the fastest thing that moves bytes from one
 * process to another through a third, and the same with AES-256-GCM at the ends (the "AEAD floor":
 * what any Node design that encrypts 1 MiB chunks end to end and crosses a relay could reach here).
 * Modes:
 *   relay                   listen on 127.0.0.1:0, print the port, pipe the first connection into the second
 *   send <port> <file>      connect, stream the file, exit
 *   recv <port> <file>      connect, stream into the file, exit at end of stream
 *   send-aead / recv-aead   the same, each 1 MiB sealed with AES-256-GCM (key in $SFT_BENCH_AEAD_KEY, hex)
 *
 * The AEAD framing is [length: u32][ciphertext][tag: 16 bytes] with a counter nonce. The receiver
 * decrypts each socket read as it arrives (GCM is a stream cipher with a tag at the end), keeps the
 * plaintext back until the tag checks, and never joins the reads into a frame: the fewest copies a
 * Node program can make. It is a measuring stick, not a protocol: no handshake, no resume.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { keepFreedMemoryForReuse } from '../../extension/core/allocator';

// The baselines keep freed memory as sft and sft-relay do, so that neither side of a comparison
// pays for page faults the other does not (extension/core/allocator.ts).
keepFreedMemoryForReuse();

const [mode, port, file] = process.argv.slice(2);
const CHUNK = 1024 * 1024;
const TAG = 16;

function nonce(counter: number): Buffer {
  const n = Buffer.alloc(12);
  n.writeUIntBE(counter, 6, 6);
  return n;
}

function key(): Buffer {
  const hex = process.env.SFT_BENCH_AEAD_KEY ?? '';
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error('SFT_BENCH_AEAD_KEY must be 32 bytes in hex');
  return Buffer.from(hex, 'hex');
}

/** Sender side: each chunk read becomes [length][ciphertext][tag], pushed as three buffers (no join). */
class Seal extends Transform {
  private counter = 0;
  constructor(private readonly key: Buffer) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const cipher = crypto.createCipheriv('aes-256-gcm', this.key, nonce(this.counter++));
    const header = Buffer.allocUnsafe(4);
    header.writeUInt32BE(chunk.length);
    const body = cipher.update(chunk);
    cipher.final();
    this.push(header);
    this.push(body);
    done(null, cipher.getAuthTag());
  }
}

/** Receiver side: parses frames across reads, decrypting each read's share of a frame as it comes. */
class Open extends Transform {
  private counter = 0;
  private header = Buffer.alloc(0);
  private remaining = 0; // ciphertext bytes still to come in this frame
  private tag = Buffer.alloc(0);
  private decipher?: crypto.DecipherGCM;
  private held: Buffer[] = [];
  constructor(private readonly key: Buffer) {
    super();
  }
  override _transform(data: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      let at = 0;
      while (at < data.length) {
        if (!this.decipher) {
          const take = Math.min(4 - this.header.length, data.length - at);
          this.header = Buffer.concat([this.header, data.subarray(at, at + take)]);
          at += take;
          if (this.header.length < 4) break;
          this.remaining = this.header.readUInt32BE();
          if (this.remaining > CHUNK) throw new Error('frame too large');
          this.header = Buffer.alloc(0);
          this.decipher = crypto.createDecipheriv('aes-256-gcm', this.key, nonce(this.counter++));
        } else if (this.remaining > 0) {
          const take = Math.min(this.remaining, data.length - at);
          this.held.push(this.decipher.update(data.subarray(at, at + take)));
          this.remaining -= take;
          at += take;
        } else {
          const take = Math.min(TAG - this.tag.length, data.length - at);
          this.tag = Buffer.concat([this.tag, data.subarray(at, at + take)]);
          at += take;
          if (this.tag.length < TAG) break;
          this.decipher.setAuthTag(this.tag);
          this.decipher.final(); // throws on a bad tag: nothing held is released
          for (const piece of this.held) this.push(piece);
          this.held = [];
          this.tag = Buffer.alloc(0);
          this.decipher = undefined;
        }
      }
      done();
    } catch (error) {
      done(error as Error);
    }
  }
  override _flush(done: TransformCallback): void {
    done(this.decipher || this.header.length > 0 ? new Error('truncated') : null);
  }
}

async function main() {
  if (mode === 'relay') {
    const waiting: net.Socket[] = [];
    const server = net.createServer((socket) => {
      // The receiver connects first and says so with one byte; the sender's bytes are piped to it.
      socket.once('data', (first) => {
        if (first[0] === 0x52 /* R */) return void waiting.push(socket);
        const receiver = waiting.shift()!;
        receiver.write(first.subarray(1));
        socket.pipe(receiver);
        socket.on('end', () => server.close());
      });
    });
    server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as net.AddressInfo).port}\n`));
    await new Promise((resolve) => server.on('close', resolve));
    return;
  }
  const aead = mode!.endsWith('-aead');
  const socket = net.connect(Number(port), '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  if (mode!.startsWith('recv')) {
    socket.write('R');
    const out = fs.createWriteStream(file!, { highWaterMark: CHUNK });
    await (aead ? pipeline(socket, new Open(key()), out) : pipeline(socket, out));
  } else {
    socket.write('S');
    const input = fs.createReadStream(file!, { highWaterMark: CHUNK });
    await (aead ? pipeline(input, new Seal(key()), socket) : pipeline(input, socket));
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${String(error)}\n`);
  process.exit(1);
});
