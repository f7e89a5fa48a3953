/**
 * Faults with real processes: a late resume the relay itself refuses (its clock decides, not the
 * sender's journal), the relay process killed with SIGKILL and started again on the same port
 * mid-transfer, and Ctrl-C in `sft send`. Real `sft-relay` and `sft` processes, a 64 MiB file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { start, waitForLine } from '../helpers/processes';
import { chunksIn, setUpCliTransfer, stderrOf } from '../helpers/cli-transfer';
import { listTree, sha256File } from '../helpers/harness';
import { EXIT_CODES } from '../../extension/cli/exit-codes';

const SIZE = 64 * 1024 * 1024 + 123;

const setUp = (relayArgs: string[] = []) => setUpCliTransfer({ prefix: 'faults', size: SIZE, relayArgs });
const log = stderrOf;

test('a resume offered after the grace period is refused by the relay itself (EXPIRED), whatever the journal says', { timeout: 240_000 }, async () => {
  const t = await setUp(['--resume-grace', '2']);
  // Bob stays online throughout, so the late re-offer reaches the relay's check and not a wait
  // for the recipient.
  const bob = await t.receive('bob', t.out, false);
  const alice = t.send();
  await t.journaledChunks(chunksIn(4));
  alice.child.kill('SIGKILL');
  await alice.exited;
  // Bob waits the relay's grace (and a little more), then gives up and removes the partial file.
  await waitForLine(bob.stderr, /Transfer failed: .*\(EXPIRED\)\. Nothing partial was kept\./, 60_000);
  assert.deepEqual(await listTree(t.out), [], 'nothing partial is left on the receiver');

  // The sender's own check would drop its journal as too old; make the journal look fresh, as a
  // sender whose clock runs ahead (or that skips the check) would see it. Only the relay's clock
  // stands between it and a resume now.
  const [name] = await t.journals('alice');
  assert.ok(name, 'the killed sender left its journal');
  const file = path.join(t.identity('alice'), 'transfers', name);
  const record = JSON.parse(await fs.readFile(file, 'utf8')) as { updatedAt: number };
  record.updatedAt = Date.now() + 60_000;
  await fs.writeFile(file, JSON.stringify(record), { mode: 0o600 });

  // Without the relay's check the receiver, which saw this offer already, would take it for a
  // replay and stay silent, and the sender would wait for an answer until its own timeout.
  const alice2 = t.send();
  assert.equal(await alice2.exited, EXIT_CODES.network, log(alice2, bob));
  const said = alice2.stderr.join('\n');
  assert.match(said, /Resuming transfer \S+ to bob/, 'the second run took up the journal');
  // The relay's words, not the client's own ("did not come back in time").
  assert.match(said, /Not delivered to bob: The transfer was interrupted more than 2 s ago and can no longer be resumed\. \(EXPIRED\)/);
  assert.deepEqual(await t.journals('alice'), [], "the sender's journal is gone");
  assert.deepEqual(await t.journals('bob'), [], "the receiver's journal is gone");
  assert.deepEqual(await listTree(t.out), []);
  // The late offer never became a transfer: one offer, and no second accept.
  const lines = await t.audit();
  assert.equal(lines.filter((l) => l.event === 'offer').length, 1, JSON.stringify(lines));
  assert.equal(lines.filter((l) => l.event === 'accept').length, 1);
  await bob.stop('SIGINT');
});

test('the relay process is killed mid-transfer and started again on the same port: the transfer resumes and arrives whole', { timeout: 240_000 }, async () => {
  const t = await setUp();
  const bob = await t.receive();
  const alice = t.send();
  const journaled = await t.journaledChunks(chunksIn(8));
  t.relay.child.kill('SIGKILL');
  assert.equal(await t.relay.exited, null, 'killed by the signal');
  // A new process, same port, same audit log (the relay keeps no other state).
  const port = new URL(t.url).port;
  const relay2 = start('sft-relay', ['--port', port, '--audit-log', path.join(t.work, 'audit.jsonl')]);
  await waitForLine(relay2.stdout, /^sft-relay listening on /, 30_000);

  const [, from, of] = await waitForLine(alice.stderr, /Resuming transfer \S+ from chunk (\d+) of (\d+)/, 90_000);
  assert.ok(Number(from) >= journaled && Number(from) < Number(of), `resumed from chunk ${from} of ${of}, not from zero`);
  assert.equal(await alice.exited, EXIT_CODES.ok, log(alice, bob, relay2));
  assert.equal(await bob.exited, EXIT_CODES.ok, log(bob));
  assert.match(alice.stdout.join('\n'), /Delivered to bob/);
  assert.equal(await sha256File(path.join(t.out, 'big.bin')), t.sum);
  assert.deepEqual(await listTree(t.out), ['big.bin'], 'nothing partial is left');
  assert.deepEqual(await t.journals('alice'), []);
  assert.deepEqual(await t.journals('bob'), []);
  // The restarted relay saw the resumed transfer through to the end.
  const events = (await t.audit()).map((l) => l.event);
  assert.equal(events.filter((e) => e === 'offer').length, 2, 'offered once, then again after the restart');
  assert.ok(events.includes('complete'), events.join(','));
});

test('Ctrl-C in sft send cancels the transfer: the receiver reports CANCELLED, nothing partial, the sender exits 1', { timeout: 240_000 }, async () => {
  const t = await setUp();
  const bob = await t.receive();
  const alice = t.send();
  await t.journaledChunks(chunksIn(2));
  alice.child.kill('SIGINT');
  assert.equal(await alice.exited, EXIT_CODES.failed, log(alice));
  assert.match(alice.stderr.join('\n'), /Not delivered to bob: The transfer was cancelled\. \(CANCELLED\)/);
  assert.equal(await bob.exited, EXIT_CODES.failed, log(bob));
  assert.match(bob.stderr.join('\n'), /Transfer failed: The sender cancelled\. \(CANCELLED\)\. Nothing partial was kept\./);
  assert.deepEqual(await listTree(t.out), [], 'no partial file remains');
  assert.deepEqual(await t.journals('alice'), []);
  assert.deepEqual(await t.journals('bob'), []);
  // The relay recorded who ended it, and why.
  const lines = await t.audit();
  const cancel = lines.filter((l) => l.event === 'cancel');
  assert.equal(cancel.length, 1, JSON.stringify(lines));
  assert.equal(cancel[0]!.code, 'CANCELLED');
  assert.equal(cancel[0]!.by, cancel[0]!.from, 'ended by the sender');
  assert.equal(lines.filter((l) => l.event === 'complete').length, 0);
});
