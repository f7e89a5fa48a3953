/**
 * Killed processes: an `sft receive` or `sft send` process killed with SIGKILL mid-transfer and
 * started again with the same identity folder continues the transfer from its journal, from the
 * last verified chunk, not from zero; one that stays away past the relay's grace period ends in
 * EXPIRED on both sides, with its partial file and both journals removed. Real `sft-relay` and
 * `sft` processes, a 64 MiB file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { waitForLine } from '../helpers/processes';
import { chunksIn, setUpCliTransfer, stderrOf } from '../helpers/cli-transfer';
import { listTree, sha256File, writeRandomFile } from '../helpers/harness';
import { EXIT_CODES } from '../../extension/cli/exit-codes';
import { DEFAULT_CHUNK_SIZE } from '../../extension/core/crypto/stream';

const SIZE = 64 * 1024 * 1024 + 123;
const CHUNKS = Math.ceil(SIZE / DEFAULT_CHUNK_SIZE);
/** The first journal checkpoint: 8 MiB in. */
const EARLY = chunksIn(8);

const setUp = (relayArgs: string[] = []) => setUpCliTransfer({ prefix: 'restart', size: SIZE, relayArgs });
const log = stderrOf;

test('the receiver is killed mid-transfer and started again: the file arrives whole, resumed from its journal', async () => {
  const t = await setUp();
  const bob = await t.receive();
  const alice = t.send();
  const journaled = await t.journaledChunks(EARLY);
  bob.child.kill('SIGKILL');
  await bob.exited;
  assert.ok(journaled < CHUNKS, 'killed before the end');
  assert.equal((await listTree(t.out)).filter((f) => f.endsWith('.sft-partial')).length, 1, 'the partial file is left for the next process');

  const bob2 = await t.receive();
  const [, from, of] = await waitForLine(bob2.stderr, /Resuming transfer \S+ from .*not asking again.*from chunk (\d+) of (\d+)/, 30_000);
  assert.ok(Number(from) >= EARLY && Number(of) === CHUNKS, `bob continues from chunk ${from} of ${of}`);
  assert.equal(await alice.exited, EXIT_CODES.ok, log(alice, bob, bob2));
  assert.equal(await bob2.exited, EXIT_CODES.ok, log(bob2));
  const [, aliceFrom] = (await waitForLine(alice.stderr, /Resuming transfer \S+ from chunk (\d+) of/))!;
  assert.ok(Number(aliceFrom) > 0, 'the sender continued where the receiver stopped, not from zero');
  assert.equal(await sha256File(path.join(t.out, 'big.bin')), t.sum);
  assert.deepEqual(await listTree(t.out), ['big.bin'], 'nothing partial is left');
  assert.deepEqual(await t.journals('bob'), []);
  assert.deepEqual(await t.journals('alice'), []);
});

test('the sender is killed mid-transfer and the same sft send is run again: it resumes from its journal', async () => {
  const t = await setUp();
  const bob = await t.receive();
  const alice = t.send();
  await t.journaledChunks(EARLY);
  alice.child.kill('SIGKILL');
  await alice.exited;
  assert.equal((await t.journals('alice')).length, 1, 'the sender left its journal');
  const journal = await fs.readFile(path.join(t.out, '..', 'id-alice', 'transfers', (await t.journals('alice'))[0]!), 'utf8');
  assert.equal((await fs.stat(path.join(t.out, '..', 'id-alice', 'transfers', (await t.journals('alice'))[0]!))).mode & 0o777, 0o600);
  assert.doesNotMatch(journal, /fileKey|payloadKey/, 'no key in clear');

  const alice2 = t.send();
  const [, from] = await waitForLine(alice2.stderr, /Resuming transfer \S+ from chunk (\d+) of/, 30_000);
  assert.ok(Number(from) >= EARLY, `resumed from chunk ${from}, not from zero`);
  assert.equal(await alice2.exited, EXIT_CODES.ok, log(alice2, bob));
  assert.equal(await bob.exited, EXIT_CODES.ok, log(bob));
  assert.match(alice2.stdout.join('\n'), /Delivered to bob/);
  assert.equal(await sha256File(path.join(t.out, 'big.bin')), t.sum);
  assert.deepEqual(await listTree(t.out), ['big.bin']);
  assert.deepEqual(await t.journals('alice'), []);
  assert.deepEqual(await t.journals('bob'), []);
});

test('a killed receiver that stays away past the grace period: both sides report EXPIRED, nothing partial remains', async () => {
  const t = await setUp(['--resume-grace', '2']);
  const bob = await t.receive();
  const alice = t.send();
  await t.journaledChunks(EARLY);
  bob.child.kill('SIGKILL');
  await bob.exited;

  assert.equal(await alice.exited, EXIT_CODES.network, log(alice));
  assert.match(alice.stderr.join('\n'), /EXPIRED/);
  assert.deepEqual(await t.journals('alice'), [], "the sender's journal is gone");

  // Back too late: the journal is past the grace period by now, or will be while it waits.
  const bob2 = await t.receive();
  assert.equal(await bob2.exited, EXIT_CODES.network, log(bob2));
  assert.match(bob2.stderr.join('\n'), /expired: .*\(EXPIRED\)/);
  assert.deepEqual(await listTree(t.out), [], 'the partial file was removed');
  assert.deepEqual(await t.journals('bob'), [], "the receiver's journal is gone");
});

// A source deleted, or changed (same size, another modification time: the journal recorded the one
// the offer was sealed with), while its sender was down: the same command goes to the relay (for
// a deleted path too, since its send is journaled), and both sides end with SOURCE_CHANGED.
for (const [what, alter] of [
  ['deleted', (file: string) => fs.rm(file)],
  ['changed', (file: string) => fs.utimes(file, new Date(), new Date(Date.now() - 3_600_000))],
] as const) {
  test(`a source ${what} while its sender was down is reported, not sent: SOURCE_CHANGED on both sides, journals cleared`, async () => {
    const t = await setUp();
    const bob = await t.receive();
    const alice = t.send();
    await t.journaledChunks(EARLY);
    alice.child.kill('SIGKILL');
    await alice.exited;
    await alter(t.src);

    const alice2 = t.send();
    assert.equal(await alice2.exited, EXIT_CODES.io, log(alice2));
    assert.match(alice2.stderr.join('\n'), /SOURCE_CHANGED/);
    assert.equal(await bob.exited, EXIT_CODES.io, log(bob));
    assert.match(bob.stderr.join('\n'), /SOURCE_CHANGED/);
    assert.deepEqual(await listTree(t.out), [], 'the partial file was removed');
    assert.deepEqual(await t.journals('alice'), []);
    assert.deepEqual(await t.journals('bob'), []);
  });
}

test('a sender that gives up (Ctrl-C) while its killed receiver is down: the restarted receiver learns CANCELLED at once and removes the partial file', async () => {
  // A grace period far longer than the test: only the relay's notice can end bob's journal early.
  const t = await setUp(['--resume-grace', '120']);
  const bob = await t.receive();
  const alice = t.send();
  await t.journaledChunks(EARLY);
  bob.child.kill('SIGKILL');
  await bob.exited;
  // Alice waits for bob to come back (the relay sees his socket close at once); she gives up.
  await new Promise((r) => setTimeout(r, 1000));
  alice.child.kill('SIGINT');
  assert.equal(await alice.exited, EXIT_CODES.failed, log(alice));
  assert.match(alice.stderr.join('\n'), /CANCELLED/);
  assert.deepEqual(await t.journals('alice'), [], "the sender's journal is gone");

  // Bob's new process reads his journal; the relay hands it the cancel it missed.
  const bob2 = await t.receive();
  assert.notEqual(await bob2.exited, EXIT_CODES.ok, log(bob2));
  assert.match(bob2.stderr.join('\n'), /was called off: .*\(CANCELLED\)/);
  assert.deepEqual(await listTree(t.out), [], 'the partial file was removed');
  assert.deepEqual(await t.journals('bob'), [], "the receiver's journal is gone");
});

test('both ends are killed mid-transfer and started again: the journals on both sides carry it to the end', async () => {
  const t = await setUp();
  const bob = await t.receive();
  const alice = t.send();
  const journaled = await t.journaledChunks(EARLY);
  alice.child.kill('SIGKILL');
  bob.child.kill('SIGKILL');
  await Promise.all([alice.exited, bob.exited]);

  // This time with `sft resume`, which takes up every journaled outgoing transfer.
  const alice2 = t.resume();
  await waitForLine(alice2.stderr, /waiting for the recipient/);
  const bob2 = await t.receive();
  const [, from] = await waitForLine(bob2.stderr, /not asking again.*from chunk (\d+) of/, 30_000);
  assert.ok(Number(from) >= journaled, `bob continues from chunk ${from}, at least the ${journaled} journaled`);
  assert.equal(await alice2.exited, EXIT_CODES.ok, log(alice2, bob2));
  assert.equal(await bob2.exited, EXIT_CODES.ok, log(bob2));
  assert.match(alice2.stdout.join('\n'), /Delivered to bob/);
  assert.equal(await sha256File(path.join(t.out, 'big.bin')), t.sum);
  assert.deepEqual(await listTree(t.out), ['big.bin']);
  assert.deepEqual(await t.journals('alice'), []);
  assert.deepEqual(await t.journals('bob'), []);
});

test('a receiver killed in the middle of a folder picks up the right file at the right byte', async () => {
  const t = await setUp();
  const folder = path.join(t.work, 'src', 'album');
  const sizes: Record<string, number> = { 'a.bin': 10 * 1024 * 1024 + 1, 'b.bin': 40 * 1024 * 1024, 'empty.txt': 0, 'sub/c.bin': 14 * 1024 * 1024 + 7 };
  const sums: Record<string, string> = {};
  for (const [name, size] of Object.entries(sizes)) sums[name] = await writeRandomFile(path.join(folder, name), size, name);
  const bob = await t.receive();
  const alice = t.send([folder]);
  // Past a.bin (10 MiB) and the empty file, into b.bin.
  await t.journaledChunks(chunksIn(16));
  bob.child.kill('SIGKILL');
  await bob.exited;

  const bob2 = await t.receive();
  const [, from] = await waitForLine(bob2.stderr, /not asking again.*from chunk (\d+) of/, 30_000);
  assert.ok(Number(from) >= chunksIn(16), `from chunk ${from}`);
  assert.equal(await alice.exited, EXIT_CODES.ok, log(alice, bob2));
  assert.equal(await bob2.exited, EXIT_CODES.ok, log(bob2));
  for (const name of Object.keys(sizes)) assert.equal(await sha256File(path.join(t.out, 'album', name)), sums[name], name);
  assert.deepEqual(await listTree(t.out), ['album/', 'album/a.bin', 'album/b.bin', 'album/empty.txt', 'album/sub/', 'album/sub/c.bin']);
  assert.deepEqual(await t.journals('bob'), []);
});

test('a sender to two recipients is killed mid-transfer and the same sft send is run again: both legs resume from their journals', async () => {
  const t = await setUp();
  const outCarol = path.join(t.work, 'out-carol');
  const bob = await t.receive();
  const carol = await t.receive('carol', outCarol);
  const alice = t.send([t.src], 'bob,carol');
  await Promise.all([t.journaledChunks(EARLY), t.journaledChunks(EARLY, 30_000, 'carol')]);
  alice.child.kill('SIGKILL');
  await alice.exited;
  const [name] = await t.journals('alice');
  assert.ok(name, 'the sender left its journal');
  const journal = JSON.parse(await fs.readFile(path.join(t.work, 'id-alice', 'transfers', name), 'utf8')) as { recipients: unknown[]; legs?: Array<{ state: string }> };
  assert.equal(journal.recipients.length, 2);
  assert.deepEqual(journal.legs?.map((l) => l.state), ['live', 'live'], 'both legs recorded as live');

  const alice2 = t.send([t.src], 'bob,carol');
  const resumed = async (who: string) => Number((await waitForLine(alice2.stderr, new RegExp(`Resuming transfer \\S+ to ${who} from chunk (\\d+) of`), 30_000))[1]);
  const [fromBob, fromCarol] = await Promise.all([resumed('bob'), resumed('carol')]);
  assert.ok(fromBob >= EARLY && fromCarol >= EARLY, `resumed from chunks ${fromBob} (bob) and ${fromCarol} (carol), not from zero`);
  assert.equal(await alice2.exited, EXIT_CODES.ok, log(alice2, bob, carol));
  assert.equal(await bob.exited, EXIT_CODES.ok, log(bob));
  assert.equal(await carol.exited, EXIT_CODES.ok, log(carol));
  assert.match(alice2.stdout.join('\n'), /Delivered to bob/);
  assert.match(alice2.stdout.join('\n'), /Delivered to carol/);
  assert.equal(await sha256File(path.join(t.out, 'big.bin')), t.sum);
  assert.equal(await sha256File(path.join(outCarol, 'big.bin')), t.sum);
  assert.deepEqual(await listTree(t.out), ['big.bin']);
  assert.deepEqual(await listTree(outCarol), ['big.bin']);
  assert.deepEqual(await t.journals('alice'), []);
  assert.deepEqual(await t.journals('bob'), []);
  assert.deepEqual(await t.journals('carol'), []);
});

test("a receiver's journal edited to point outside the chosen folder: the restarted receiver refuses it and touches nothing there", async () => {
  const t = await setUp();
  const bob = await t.receive();
  const alice = t.send();
  await t.journaledChunks(EARLY);
  bob.child.kill('SIGKILL');
  await bob.exited;
  const [name] = await t.journals('bob');
  const file = path.join(t.out, '..', 'id-bob', 'transfers', name!);
  const record = JSON.parse(await fs.readFile(file, 'utf8')) as { transferId: string; files: Array<{ finalPath: string; tempPath: string }> };
  // Someone with the user's rights moves the plan elsewhere, onto a file that exists there.
  const elsewhere = path.join(t.out, '..', 'elsewhere');
  await fs.mkdir(elsewhere);
  const victim = path.join(elsewhere, path.basename(record.files[0]!.tempPath));
  await fs.writeFile(victim, 'precious');
  record.files[0] = { ...record.files[0]!, finalPath: path.join(elsewhere, 'big.bin'), tempPath: victim };
  await fs.writeFile(file, JSON.stringify(record));

  const bob2 = await t.receive();
  assert.notEqual(await bob2.exited, EXIT_CODES.ok, log(bob2));
  assert.match(bob2.stderr.join('\n'), /INTEGRITY/);
  assert.notEqual(await alice.exited, EXIT_CODES.ok, log(alice));
  assert.equal(await fs.readFile(victim, 'utf8'), 'precious', 'the file named by the edited journal is untouched');
  assert.deepEqual(await listTree(elsewhere), [path.basename(victim)]);
  assert.deepEqual(await t.journals('bob'), [], 'the refused journal is removed');
});
