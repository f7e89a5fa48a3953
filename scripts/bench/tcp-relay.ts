/**
 * The baseline: a plain TCP relay with no encryption and no protocol, the fastest thing that
 * moves bytes from one process to another through a third. Modes:
 *   relay              listen on 127.0.0.1:0, print the port, pipe the first connection into the second
 *   send <port> <file> connect, stream the file, exit
 *   recv <port> <file> connect, stream into the file, exit at end of stream
 */
import fs from 'node:fs';
import net from 'node:net';
import { pipeline } from 'node:stream/promises';

const [mode, port, file] = process.argv.slice(2);

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
  const socket = net.connect(Number(port), '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  if (mode === 'recv') {
    socket.write('R');
    await pipeline(socket, fs.createWriteStream(file!, { highWaterMark: 1024 * 1024 }));
  } else {
    socket.write('S');
    await pipeline(fs.createReadStream(file!, { highWaterMark: 1024 * 1024 }), socket);
  }
}

void main();
