/**
 * Hostile peers and a hostile world: crafted offers with dangerous names or lying sizes, links in
 * the destination, sources that change underfoot, and a disk that fills. A real relay on port 0;
 * the hostile sender is a raw socket that signs its own offers, so it skips every sender-side check.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { Harness, listTree, writeRandomFile, type Peer } from '../helpers/harness';
import { rawConnect, rawJoin, type RawConnection } from '../helpers/raw';
import { Identity } from '../../extension/core/crypto/identity';
import { newTransferId, sealOffer, type HeaderEntry } from '../../extension/core/crypto/envelope';
import { offerToWire, type Result } from '../../extension/core/protocol';
import { sealChunk } from '../../extension/core/crypto/stream';
import { sendFiles } from '../../extension/core/transfer/sender';
import type { SftError } from '../../extension/core/errors';

let h: Harness;
let bob: Peer;
let alice: Peer;
let mallory: Identity;
let conn: RawConnection;

before(async () => {
  h = await Harness.start();
  bob = await h.peer('bob');
  alice = await h.peer('alice');
  mallory = Identity.generate();
  conn = await rawConnect(h.url);
  assert.equal((await rawJoin(conn, mallory, 'mallory')).ok, true);
  await h.until(() => bob.client.peers.size === 2);
});
after(async () => {
  conn.close();
  await h.close();
});

/** Mallory offers bob a payload described by `entries` (plainBytes may lie); resolves with the sealed parts. */
async function craftOffer(entries: HeaderEntry[], plainBytes = entries.reduce((n, e) => n + e.size, 0)) {
  const transferId = newTransferId();
  const sealed = sealOffer({
    sender: mallory,
    recipients: [bob.identity.publicIdentity],
    transferId,
    createdAt: Date.now(),
    header: { v: 1, entries, chunkSize: 1024, plainBytes },
  });
  const cancelled = new Promise<{ code: string }>((resolve) => {
    const onCancel = (m: { transferId: string; code: string }) => {
      if (m.transferId !== transferId) return;
      conn.socket.off('cancel', onCancel);
      resolve(m);
    };
    conn.socket.on('cancel', onCancel);
  });
  const reply = (await conn.socket.timeout(5000).emitWithAck('offer', offerToWire(sealed.offer))) as Result;
  assert.equal(reply.ok, true);
  return { ...sealed, transferId, cancelled };
}

describe('received names are hostile until proven otherwise', () => {
  const hostile: string[][] = [
    ['../escape.txt'],
    ['docs/../../escape.txt'],
    ['/etc/passwd'],
    ['C:\\Windows\\win.ini'],
    ['C:evil.txt'],
    ['\\\\server\\share\\x.txt'],
    ['dir\\file.txt'],
    ['CON'],
    ['nul.txt'],
    ['COM1.log'],
    ['invoice\u202Efdp.exe'],
    ['zero\u200Bwidth.txt'],
    ['bell\u0007.txt'],
    ['trailing.'],
    ['trailing '],
    ['x'.repeat(300)],
    ['Report.txt', 'report.txt'],
    // One name spelt twice, composed and decomposed (NFC, NFD): two files on Linux, one on macOS.
    ['caf\u00e9.txt', 'cafe\u0301.txt'],
    ['cafe\u0301.txt'],
    ['a', 'a/b'],
  ];
  for (const names of hostile) {
    test(`refused before anything is written: ${JSON.stringify(names)}`, async () => {
      const refused = new Promise<SftError>((resolve) => bob.inbox.once('refused', (r) => resolve(r.error)));
      const offers: string[] = [];
      const onOffer = () => offers.push('offered');
      bob.inbox.on('offer', onOffer);
      const { cancelled } = await craftOffer(names.map((p) => ({ path: p, type: 'file', size: 10 })));
      assert.equal((await refused).code, 'UNSAFE_NAME');
      assert.equal((await cancelled).code, 'UNSAFE_NAME', 'the sender is told why');
      bob.inbox.off('offer', onOffer);
      assert.deepEqual(offers, [], 'the user is never even asked');
    });
  }

  test('a folder in the destination that is a link to elsewhere is never followed', async () => {
    const out = await h.tempDir();
    const elsewhere = await h.tempDir();
    await fs.symlink(elsewhere, path.join(out, 'link'), 'dir');
    const src = await h.tempDir();
    await writeRandomFile(path.join(src, 'link', 'payload.txt'), 100);
    const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
    received.catch(() => undefined);
    const sent = await sendFiles(alice.client, { paths: [path.join(src, 'link')], to: [alice.client.findPeer('bob')] });
    await assert.rejects(received, { code: 'UNSAFE_NAME' });
    assert.equal(sent.recipients[0]!.outcome, 'failed');
    assert.deepEqual(await fs.readdir(elsewhere), [], 'nothing landed through the link');
  });
});

describe('a sender that lies about sizes', () => {
  test('a header whose sizes do not add up is refused', async () => {
    const refused = new Promise<SftError>((resolve) => bob.inbox.once('refused', (r) => resolve(r.error)));
    await craftOffer([{ path: 'a.bin', type: 'file', size: 100 }], 5000);
    assert.equal((await refused).code, 'INTEGRITY');
  });

  test('chunks longer or shorter than declared are stopped by the relay; nothing is kept', async () => {
    for (const wrongLength of [1024 + 16 + 1, 512]) {
      const out = await h.tempDir();
      const incoming = bob.nextOffer();
      const { transferId, cancelled } = await craftOffer([{ path: 'a.bin', type: 'file', size: 3000 }]);
      const offer = await incoming;
      const received = offer.accept({ directory: out });
      received.catch(() => undefined);
      await new Promise<void>((resolve) => conn.socket.once('answer', () => resolve()));
      conn.socket.emit('chunk', transferId, 0, Buffer.alloc(wrongLength));
      assert.equal((await cancelled).code, 'SIZE_MISMATCH');
      await assert.rejects(received, { code: 'SIZE_MISMATCH' });
      assert.deepEqual(await listTree(out), []);
    }
  });

  test('more data than declared cannot be delivered: a chunk past the declared count is stopped by the relay, never forwarded', async () => {
    const out = await h.tempDir();
    const incoming = bob.nextOffer();
    const { transferId, keys, layout, cancelled } = await craftOffer([{ path: 'a.bin', type: 'file', size: 1500 }]);
    assert.equal(layout.chunkCount, 2);
    // What reaches bob's connection, below the client core.
    const forwarded: number[] = [];
    const bobSocket = (bob.client as unknown as { socket: { on(e: string, f: (...a: unknown[]) => void): void; off(e: string, f: (...a: unknown[]) => void): void } }).socket;
    const spy = (id: unknown, index: unknown) => {
      if (id === transferId) forwarded.push(index as number);
    };
    bobSocket.on('chunk', spy);
    const offer = await incoming;
    const received = offer.accept({ directory: out });
    received.catch(() => undefined);
    await new Promise<void>((resolve) => conn.socket.once('answer', () => resolve()));
    // The declared chunks and one more, back to back: the extra one reaches the relay before the
    // receiver can have finished.
    conn.socket.emit('chunk', transferId, 0, sealChunk(keys.payloadKey, layout, 0, Buffer.alloc(1024, 1)));
    conn.socket.emit('chunk', transferId, 1, sealChunk(keys.payloadKey, layout, 1, Buffer.alloc(476, 2)));
    conn.socket.emit('chunk', transferId, 2, Buffer.alloc(1024 + 16, 3));
    assert.equal((await cancelled).code, 'SIZE_MISMATCH', 'the relay stopped the sender');
    const outcome = await received.then(
      (r) => ({ ok: r }),
      (e: SftError) => ({ error: e }),
    );
    await h.until(() => h.relay!.stats().transfers === 0, 10_000);
    await new Promise((r) => setTimeout(r, 100));
    bobSocket.off('chunk', spy);
    assert.deepEqual(forwarded, [0, 1], 'the extra chunk never left the relay');
    // The relay's stop reaches bob right behind the last declared chunk: either he had verified
    // everything by then (the file, exactly as declared) or he drops it all. Never more bytes.
    if ('ok' in outcome) {
      assert.deepEqual(await listTree(out), ['a.bin']);
      assert.equal((await fs.stat(path.join(out, 'a.bin'))).size, 1500);
      assert.deepEqual(await fs.readFile(path.join(out, 'a.bin')), Buffer.concat([Buffer.alloc(1024, 1), Buffer.alloc(476, 2)]));
    } else {
      assert.equal(outcome.error.code, 'SIZE_MISMATCH');
      assert.deepEqual(await listTree(out), []);
    }
  });
});

describe('entries and receivers that do not play by the rules', () => {
  for (const type of ['symlink', 'link', 'fifo', 'device', 'socket']) {
    test(`an entry of type ${type} (signed, well-formed otherwise) is refused before anything is written, and the sender told`, async () => {
      const out = await h.tempDir();
      const refused = new Promise<SftError>((resolve) => bob.inbox.once('refused', (r) => resolve(r.error)));
      const offers: string[] = [];
      const onOffer = () => offers.push('offered');
      bob.inbox.on('offer', onOffer);
      const entries = [
        { path: 'innocent.txt', type: 'file', size: 10 },
        { path: 'passwd', type, size: 0, target: '/etc/passwd' },
      ] as unknown as HeaderEntry[];
      const { cancelled } = await craftOffer(entries);
      const error = await refused;
      // The header check refuses any type but file and dir, as a malformed (though signed) header.
      assert.equal(error.code, 'INTEGRITY');
      assert.match(error.message, /malformed: bad entry/);
      assert.equal((await cancelled).code, 'INTEGRITY', 'the sender is told why');
      bob.inbox.off('offer', onOffer);
      assert.deepEqual(offers, [], 'the user is never asked');
      await h.until(() => h.relay!.stats().transfers === 0, 10_000);
      assert.deepEqual(await listTree(out), []);
    });
  }

  test('a receiver that accepts, then stops acknowledging: the sender stops with TIMEOUT and says why, the relay ends the transfer, nothing is left', async () => {
    const src = await h.tempDir();
    const out = await h.tempDir();
    // More chunks than the window, so the sender must wait for acknowledgements.
    await writeRandomFile(path.join(src, 'stalled.bin'), 16 * 1024 * 1024 + 1);
    const ack = bob.client.ack.bind(bob.client);
    bob.client.ack = () => undefined;
    const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
    received.catch(() => undefined);
    const sent = await sendFiles(alice.client, { paths: [path.join(src, 'stalled.bin')], to: [alice.client.findPeer('bob')], stallTimeoutMs: 1500 }).finally(() => {
      bob.client.ack = ack;
    });
    const leg = sent.recipients[0]!;
    assert.equal(leg.outcome === 'failed' && leg.code, 'TIMEOUT');
    assert.equal(leg.outcome === 'failed' && leg.message, 'The recipients stopped acknowledging chunks (nothing for 1.5 s).');
    // The sender's cancel ends the transfer at the relay, which tells the receiver.
    await assert.rejects(received, { code: 'TIMEOUT' });
    await h.until(() => h.relay!.stats().transfers === 0, 10_000);
    assert.deepEqual(await listTree(out), [], 'no partial file remains');
  });
});

describe('the source changes or vanishes while it is sent', () => {
  test('a file that grows mid-transfer is reported, not delivered as something else', async () => {
    const src = await h.tempDir();
    const out = await h.tempDir();
    const file = path.join(src, 'growing.log');
    await writeRandomFile(file, 20 * 1024 * 1024);
    const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
    received.catch(() => undefined);
    let touched = false;
    const sent = await sendFiles(alice.client, {
      paths: [file],
      to: [alice.client.findPeer('bob')],
      onProgress: (p) => {
        if (!touched && p.bytes > 0) {
          touched = true;
          void fs.appendFile(file, 'one more line\n');
        }
      },
    });
    const leg = sent.recipients[0]!;
    assert.equal(leg.outcome === 'failed' && leg.code, 'SOURCE_CHANGED');
    await assert.rejects(received, { code: 'SOURCE_CHANGED' });
    assert.deepEqual(await listTree(out), []);
  });

  test('a file deleted before its turn is reported', async () => {
    const src = await h.tempDir();
    const out = await h.tempDir();
    // Four times what a sender keeps in flight (8 MiB): it must wait for acknowledgements, and so
    // for the first progress event and the removal, before it reaches b-second.
    await writeRandomFile(path.join(src, 'dir', 'a-first.bin'), 32 * 1024 * 1024);
    await writeRandomFile(path.join(src, 'dir', 'b-second.bin'), 1000);
    const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
    received.catch(() => undefined);
    let removed = false;
    const sent = await sendFiles(alice.client, {
      paths: [path.join(src, 'dir')],
      to: [alice.client.findPeer('bob')],
      onProgress: () => {
        if (!removed) {
          removed = true;
          void fs.rm(path.join(src, 'dir', 'b-second.bin'));
        }
      },
    });
    const leg = sent.recipients[0]!;
    assert.equal(leg.outcome === 'failed' && leg.code, 'SOURCE_CHANGED');
    await assert.rejects(received, { code: 'SOURCE_CHANGED' });
    assert.deepEqual(await listTree(out), []);
  });
});

describe('the disk fills', () => {
  let small: string | undefined;
  before(async () => {
    // A real small file system: a 2 MiB tmpfs. Mounting needs root, which CI and this machine have.
    const dir = await h.tempDir('sft-tmpfs-');
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir], { stdio: 'ignore' });
      small = dir;
    } catch {
      small = undefined;
    }
  });
  after(() => {
    if (small) execFileSync('umount', [small]);
  });

  test('an offer larger than the free space is refused before accepting, and the sender told', async (t) => {
    if (!small) return t.skip('mounting a tmpfs needs root');
    const src = await h.tempDir();
    await writeRandomFile(path.join(src, 'big.bin'), 3 * 1024 * 1024);
    const received = bob.nextOffer().then((o) => o.accept({ directory: small! }));
    received.catch(() => undefined);
    const sent = await sendFiles(alice.client, { paths: [path.join(src, 'big.bin')], to: [alice.client.findPeer('bob')] });
    await assert.rejects(received, { code: 'NO_SPACE' });
    const leg = sent.recipients[0]!;
    assert.equal(leg.outcome === 'failed' && leg.code, 'NO_SPACE');
    assert.deepEqual(await listTree(small), []);
  });

  test('a disk that fills during the transfer: a clear error, the partial file removed, the sender told', async (t) => {
    if (!small) return t.skip('mounting a tmpfs needs root');
    const src = await h.tempDir();
    await writeRandomFile(path.join(src, 'fits.bin'), 1536 * 1024);
    // Once the transfer is under way (the first chunk written), something else fills the disk.
    const ack = bob.client.ack.bind(bob.client);
    bob.client.ack = (id, index) => {
      if (index === 0) writeFileSync(path.join(small!, 'filler'), Buffer.alloc(1024 * 1024));
      ack(id, index);
    };
    const received = bob.nextOffer().then((o) => o.accept({ directory: small! }));
    received.catch(() => undefined);
    const sent = await sendFiles(alice.client, { paths: [path.join(src, 'fits.bin')], to: [alice.client.findPeer('bob')] }).finally(() => {
      bob.client.ack = ack;
    });
    await assert.rejects(received, { code: 'NO_SPACE' });
    const leg = sent.recipients[0]!;
    assert.equal(leg.outcome === 'failed' && leg.code, 'NO_SPACE');
    assert.deepEqual((await listTree(small)).filter((n) => n !== 'filler'), [], 'no partial file remains');
    await fs.rm(path.join(small, 'filler'), { force: true });
  });
});
