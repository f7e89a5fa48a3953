/**
 * Transfers end to end: a real relay on port 0, real socket.io-client peers, real files on disk.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Harness, listTree, sha256File, writeRandomFile, type Peer } from '../helpers/harness';
import { sendFiles } from '../../extension/core/transfer/sender';
import { DEFAULT_CHUNK_SIZE } from '../../extension/core/crypto/stream';
import { Inbox, type ReceiveResult } from '../../extension/core/transfer/receiver';
import { TransferJournal } from '../../extension/core/transfer/journal';
import { RelayClient } from '../../extension/core/client';
import { Identity } from '../../extension/core/crypto/identity';

let h: Harness;
let alice: Peer;
let bob: Peer;

before(async () => {
  h = await Harness.start();
  alice = await h.peer('alice');
  bob = await h.peer('bob');
  await h.until(() => alice.client.peers.has(bob.identity.peerId));
});
after(() => h.close());

/** Sends `paths` from `from` to each of `to`, every recipient accepting into its own new folder. */
async function transfer(from: Peer, to: Peer[], paths: string[]) {
  const outs = await Promise.all(to.map(() => h.tempDir('sft-out-')));
  const received: Promise<ReceiveResult>[] = to.map((peer, i) => peer.nextOffer().then((offer) => offer.accept({ directory: outs[i]! })));
  const sent = await sendFiles(from.client, { paths, to: to.map((p) => from.client.findPeer(p.name)) });
  return { sent, received: await Promise.all(received), outs };
}

describe('file sizes', () => {
  for (const size of [0, 1, DEFAULT_CHUNK_SIZE - 1, DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_SIZE + 1, 3 * DEFAULT_CHUNK_SIZE]) {
    test(`${size} bytes arrive byte-identical`, async () => {
      const src = await h.tempDir();
      const file = path.join(src, `file-${size}.bin`);
      const sum = await writeRandomFile(file, size, `size-${size}`);
      const { sent, received, outs } = await transfer(alice, [bob], [file]);
      assert.deepEqual(sent.recipients, [{ peerId: bob.identity.peerId, outcome: 'done' }]);
      assert.equal(received[0]!.files.length, 1);
      assert.equal(await sha256File(path.join(outs[0]!, `file-${size}.bin`)), sum);
      assert.deepEqual(await listTree(outs[0]!), [`file-${size}.bin`], 'no temporary files are left behind');
    });
  }

  test('several hundred MB stream through with flat memory and arrive byte-identical', async () => {
    const size = 300 * 1024 * 1024 + 12345;
    const src = await h.tempDir();
    const file = path.join(src, 'large.bin');
    const sum = await writeRandomFile(file, size, 'large');
    const before = process.memoryUsage().rss;
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
    const { sent, outs } = await transfer(alice, [bob], [file]).finally(() => clearInterval(sampler));
    assert.equal(sent.recipients[0]!.outcome, 'done');
    assert.equal(sent.plainBytes, size);
    assert.equal(await sha256File(path.join(outs[0]!, 'large.bin')), sum);
    // Not a benchmark: a loose bound that only a whole-file buffer (300 MB) would break.
    assert.ok(peak - before < 200 * 1024 * 1024, `RSS grew by ${Math.round((peak - before) / 2 ** 20)} MiB`);
  });
});

test('a folder tree arrives with its structure, including empty files and folders', async () => {
  const src = await h.tempDir();
  const root = path.join(src, 'project');
  await writeRandomFile(path.join(root, 'README.md'), 1000, 'r');
  await writeRandomFile(path.join(root, 'src', 'main.ts'), 70_000, 'm');
  await writeRandomFile(path.join(root, 'src', 'deep', 'er', 'x.bin'), DEFAULT_CHUNK_SIZE * 2 + 7, 'x');
  await writeRandomFile(path.join(root, 'empty.txt'), 0, 'e');
  await fs.mkdir(path.join(root, 'logs', 'none'), { recursive: true });
  const single = path.join(src, 'notes.txt');
  await fs.writeFile(single, 'loose file beside the folder');
  const { sent, outs } = await transfer(alice, [bob], [root, single]);
  assert.equal(sent.recipients[0]!.outcome, 'done');
  assert.deepEqual(await listTree(outs[0]!), await listTree(src));
  for (const rel of ['project/README.md', 'project/src/main.ts', 'project/src/deep/er/x.bin', 'project/empty.txt', 'notes.txt']) {
    assert.equal(await sha256File(path.join(outs[0]!, rel)), await sha256File(path.join(src, rel)), rel);
  }
});

test('one ciphertext stream fans out to several recipients', async () => {
  const carol = await h.peer('carol');
  await h.until(() => alice.client.peers.has(carol.identity.peerId));
  const src = await h.tempDir();
  const file = path.join(src, 'shared.bin');
  const sum = await writeRandomFile(file, DEFAULT_CHUNK_SIZE * 5 + 3, 'shared');
  const { sent, outs } = await transfer(alice, [bob, carol], [file]);
  assert.deepEqual(new Set(sent.recipients.map((r) => r.outcome)), new Set(['done']));
  for (const out of outs) assert.equal(await sha256File(path.join(out, 'shared.bin')), sum);
});

test('three senders and three receivers at once', async () => {
  const senders = await Promise.all(['s1', 's2', 's3'].map((n) => h.peer(n)));
  const receivers = await Promise.all(['r1', 'r2', 'r3'].map((n) => h.peer(n)));
  await h.until(() => senders.every((s) => receivers.every((r) => s.client.peers.has(r.identity.peerId))));
  const src = await h.tempDir();
  const jobs = senders.map(async (sender, i) => {
    const receiver = receivers[i]!;
    const file = path.join(src, `from-${sender.name}.bin`);
    const sum = await writeRandomFile(file, 3_000_000 + i, sender.name);
    const out = await h.tempDir();
    const got = receiver.nextOffer().then((o) => o.accept({ directory: out }));
    const sent = await sendFiles(sender.client, { paths: [file], to: [sender.client.findPeer(receiver.name)] });
    await got;
    assert.equal(sent.recipients[0]!.outcome, 'done');
    assert.equal(await sha256File(path.join(out, `from-${sender.name}.bin`)), sum);
  });
  await Promise.all(jobs);
});

test('a declined offer writes nothing and tells the sender', async () => {
  const src = await h.tempDir();
  const file = path.join(src, 'unwanted.bin');
  await writeRandomFile(file, 5000);
  bob.nextOffer().then((offer) => offer.decline());
  const sent = await sendFiles(alice.client, { paths: [file], to: [alice.client.findPeer('bob')] });
  assert.deepEqual(sent.recipients, [{ peerId: bob.identity.peerId, outcome: 'declined' }]);
});

test('an existing file is never overwritten without consent', async () => {
  const src = await h.tempDir();
  const out = await h.tempDir();
  const file = path.join(src, 'report.pdf');
  const sum = await writeRandomFile(file, 4000, 'new');
  await fs.writeFile(path.join(out, 'report.pdf'), 'precious');

  const renamed = bob.nextOffer().then((o) => o.accept({ directory: out }));
  await sendFiles(alice.client, { paths: [file], to: [alice.client.findPeer('bob')] });
  assert.equal((await renamed).files[0]!.savedAs, path.join(out, 'report (1).pdf'));
  assert.equal(await fs.readFile(path.join(out, 'report.pdf'), 'utf8'), 'precious');
  assert.equal(await sha256File(path.join(out, 'report (1).pdf')), sum);

  const refused = bob.nextOffer().then((o) => o.accept({ directory: out, onConflict: 'fail' }));
  refused.catch(() => undefined); // Asserted below, after the sender's side.
  const sent = await sendFiles(alice.client, { paths: [file], to: [alice.client.findPeer('bob')] });
  await assert.rejects(refused, { code: 'FILE_EXISTS' });
  assert.equal(sent.recipients[0]!.outcome, 'failed');
  assert.equal(await fs.readFile(path.join(out, 'report.pdf'), 'utf8'), 'precious');
});

test('a finished temporary file swapped for a link before the commit: nothing is done through the link, and the commit is rolled back', async () => {
  // Someone who can write to the destination folder replaces a finished temporary file with a
  // link to a private file of the user's, while a later file is still arriving. Setting the mode
  // and time by path would follow the link (and make the private file world-readable).
  const src = await h.tempDir();
  const out = await h.tempDir();
  const elsewhere = await h.tempDir();
  const victim = path.join(elsewhere, 'id_ed25519');
  await fs.writeFile(victim, 'secret', { mode: 0o600 });
  await fs.chmod(victim, 0o600);
  const victimTime = new Date('2001-02-03T04:05:06Z');
  await fs.utimes(victim, victimTime, victimTime);
  const names = ['replaced.txt', 'new.txt', 'swapped.txt'];
  for (const name of names) await fs.writeFile(path.join(src, name), `${name} from alice`);
  await writeRandomFile(path.join(src, 'last.bin'), 32 * DEFAULT_CHUNK_SIZE, 'last');
  await fs.writeFile(path.join(out, 'replaced.txt'), 'the old one');

  const ack = bob.client.ack.bind(bob.client);
  let swapped: Promise<void> | undefined;
  bob.client.ack = (id, index) => {
    ack(id, index);
    // By the third chunk of last.bin, swapped.txt is complete and closed.
    if (index === 2) {
      swapped = (async () => {
        const temp = (await fs.readdir(out)).find((n) => n.startsWith('.swapped.txt.'))!;
        await fs.rm(path.join(out, temp));
        await fs.symlink(victim, path.join(out, temp));
      })();
    }
  };
  try {
    const received = bob.nextOffer().then((o) => o.accept({ directory: out, onConflict: 'overwrite' }));
    received.catch(() => undefined); // Asserted below, after the sender's side.
    const sent = await sendFiles(alice.client, { paths: [...names.map((n) => path.join(src, n)), path.join(src, 'last.bin')], to: [alice.client.findPeer('bob')] });
    await assert.rejects(received, { code: 'UNSAFE_NAME' });
    await swapped;
    assert.equal(sent.recipients[0]!.outcome, 'failed');
  } finally {
    bob.client.ack = ack;
  }
  const stat = await fs.stat(victim);
  assert.equal(stat.mode & 0o777, 0o600, 'the private file keeps its mode');
  assert.equal(stat.mtimeMs, victimTime.getTime(), 'and its time');
  assert.equal(await fs.readFile(victim, 'utf8'), 'secret');
  // All or nothing, under 'overwrite': the file that replaced one stays (the old one is gone),
  // the one that took a new name is taken back, and no temporary file or link is left.
  assert.deepEqual(await listTree(out), ['replaced.txt']);
  assert.equal(await fs.readFile(path.join(out, 'replaced.txt'), 'utf8'), 'replaced.txt from alice');
});

test("an Inbox with a journal journals each accepted transfer, except one accepted with journal: false", async () => {
  // journal: false is for a staging folder the caller copies on from (VS Code's virtual file
  // systems): a restart would continue the transfer into that folder, and nothing would copy it on.
  const journal = new TransferJournal(await h.tempDir('sft-journal-'));
  const saved: string[] = [];
  const save = journal.save.bind(journal);
  journal.save = (record) => {
    saved.push(record.transferId);
    return save(record);
  };
  const client = new RelayClient({ url: h.url, identity: Identity.generate(), name: 'dana', reconnect: false });
  await client.connect();
  const inbox = new Inbox(client, { journal });
  await inbox.restore();
  try {
    await h.until(() => alice.client.peers.has(client.identity.peerId));
    const src = await h.tempDir();
    const file = path.join(src, 'staged.bin');
    await writeRandomFile(file, 3 * DEFAULT_CHUNK_SIZE, 'staged');
    for (const journaled of [false, true]) {
      const out = await h.tempDir();
      const received = new Promise<ReceiveResult>((resolve, reject) => inbox.once('offer', (o) => o.accept({ directory: out, journal: journaled }).then(resolve, reject)));
      const sent = await sendFiles(alice.client, { paths: [file], to: [alice.client.findPeer('dana')] });
      assert.equal(sent.recipients[0]!.outcome, 'done');
      const { transferId } = await received;
      assert.equal(saved.includes(transferId), journaled, journaled ? 'journaled by default' : 'not journaled');
    }
  } finally {
    client.close();
  }
});

test('a numbered name is compared as a case-insensitive file system would: "a (1).txt" planned makes "A (1).txt" the next one', async () => {
  // On macOS or Windows the two would be one file; planned apart, they would share a temporary file.
  const src = await h.tempDir();
  const out = await h.tempDir();
  await fs.writeFile(path.join(src, 'a.txt'), 'first');
  await fs.writeFile(path.join(src, 'A (1).txt'), 'second');
  await fs.writeFile(path.join(out, 'a.txt'), 'already here');
  const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
  const sent = await sendFiles(alice.client, { paths: [path.join(src, 'a.txt'), path.join(src, 'A (1).txt')], to: [alice.client.findPeer('bob')] });
  assert.equal(sent.recipients[0]!.outcome, 'done');
  assert.deepEqual((await received).files.map((f) => path.basename(f.savedAs)), ['a (1).txt', 'A (1) (1).txt']);
  assert.equal(await fs.readFile(path.join(out, 'a.txt'), 'utf8'), 'already here');
});

test('a transfer cancelled by the receiver midway leaves no partial file and tells the sender', async () => {
  const src = await h.tempDir();
  const out = await h.tempDir();
  const file = path.join(src, 'big.bin');
  await writeRandomFile(file, 80 * 1024 * 1024, 'cancel');
  const controller = new AbortController();
  const received = bob.nextOffer().then((o) =>
    o.accept({
      directory: out,
      signal: controller.signal,
      onProgress: (p) => {
        if (p.bytes > 4 * 1024 * 1024) controller.abort();
      },
    }),
  );
  received.catch(() => undefined); // Asserted below, after the sender's side.
  const sent = await sendFiles(alice.client, { paths: [file], to: [alice.client.findPeer('bob')] });
  await assert.rejects(received, { code: 'CANCELLED' });
  assert.equal(sent.recipients[0]!.outcome, 'failed');
  assert.deepEqual(await listTree(out), [], 'neither the file nor its temporary remains');
});

test('a transfer cancelled by the sender midway leaves no partial file', async () => {
  const src = await h.tempDir();
  const out = await h.tempDir();
  const file = path.join(src, 'big.bin');
  await writeRandomFile(file, 80 * 1024 * 1024, 'cancel2');
  const controller = new AbortController();
  const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
  const sent = sendFiles(alice.client, {
    paths: [file],
    to: [alice.client.findPeer('bob')],
    signal: controller.signal,
    onProgress: (p) => {
      if (p.bytes > 4 * 1024 * 1024) controller.abort();
    },
  });
  await assert.rejects(received, { code: 'CANCELLED' });
  const result = await sent;
  assert.equal(result.recipients[0]!.outcome, 'failed');
  assert.deepEqual(await listTree(out), []);
});

test('an offer the sender withdraws before it is answered is taken down, and cannot be accepted', async () => {
  const src = await h.tempDir();
  const out = await h.tempDir();
  const file = path.join(src, 'changed-my-mind.bin');
  await writeRandomFile(file, 1000);
  const controller = new AbortController();
  const offered = bob.nextOffer();
  const withdrawn = new Promise<{ transferId: string; error: { code: string } }>((resolve) => bob.inbox.once('withdrawn', resolve));
  const sending = sendFiles(alice.client, { paths: [file], to: [alice.client.findPeer('bob')], signal: controller.signal });
  const offer = await offered;
  controller.abort();
  const gone = await withdrawn;
  assert.equal(gone.transferId, offer.transferId);
  assert.equal(gone.error.code, 'CANCELLED');
  await assert.rejects(offer.accept({ directory: out }), { code: 'CANCELLED' });
  assert.equal((await sending).recipients[0]!.outcome, 'failed');
  assert.deepEqual(await listTree(out), []);
});
