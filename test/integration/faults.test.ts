/**
 * Faults with real processes: a late resume the relay itself refuses (its clock decides, not the
 * sender's journal), the relay process killed with SIGKILL and started again on the same port
 * mid-transfer, and Ctrl-C in `sft send`. Real `sft-relay` and `sft` processes, a 64 MiB file.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { start, startRelayProcess, waitForLine, type Running } from '../helpers/processes';
import { listTree, sha256File, writeRandomFile } from '../helpers/harness';
import { EXIT_CODES } from '../../extension/cli/exit-codes';

const SIZE = 64 * 1024 * 1024 + 123;

const running: Running[] = [];
const dirs: string[] = [];
after(async () => {
  for (const p of running) await p.stop('SIGKILL');
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true });
});

async function setUp(relayArgs: string[] = []) {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-faults-'));
  dirs.push(work);
  const auditLog = path.join(work, 'audit.jsonl');
  const { relay, url } = await startRelayProcess(['--audit-log', auditLog, ...relayArgs]);
  running.push(relay);
  const src = path.join(work, 'src', 'big.bin');
  const sum = await writeRandomFile(src, SIZE, 'faults');
  const out = path.join(work, 'out');
  const identity = (name: string) => path.join(work, `id-${name}`);
  const spawn = (args: string[]) => {
    const p = start('sft', [...args, '--relay', url]);
    running.push(p);
    return p;
  };
  const receive = async (once = true) => {
    const p = spawn(['receive', '--out', out, '--yes', ...(once ? ['--once'] : []), '--name', 'bob', '--identity', identity('bob')]);
    await waitForLine(p.stderr, /Waiting for files/, 30_000);
    return p;
  };
  const send = () => spawn(['send', src, '--to', 'bob', '--name', 'alice', '--identity', identity('alice')]);
  /** Waits until bob's journal records at least `min` verified chunks. */
  const journaledChunks = async (min: number, timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const folder = path.join(identity('bob'), 'transfers');
      for (const name of await fs.readdir(folder).catch(() => [] as string[])) {
        if (!/^receive-.*\.json$/.test(name)) continue;
        const text = await fs.readFile(path.join(folder, name), 'utf8').catch(() => '{}');
        const verified = (JSON.parse(text) as { verified?: number }).verified ?? 0;
        if (verified >= min) return verified;
      }
      if (Date.now() > deadline) throw new Error(`bob's journal never reached ${min} chunks`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  const journals = async (name: string) => (await fs.readdir(path.join(identity(name), 'transfers')).catch(() => [] as string[])).filter((n) => n.endsWith('.json'));
  const audit = async () => (await fs.readFile(auditLog, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  return { relay, url, work, src, out, sum, identity, receive, send, journaledChunks, journals, audit };
}

const log = (...ps: Running[]) => ps.map((p) => p.stderr.join('\n')).join('\n---\n');

test('a resume offered after the grace period is refused by the relay itself (EXPIRED), whatever the journal says', { timeout: 240_000 }, async () => {
  const t = await setUp(['--resume-grace', '2']);
  // Bob stays online throughout, so the late re-offer reaches the relay's check and not a wait
  // for the recipient.
  const bob = await t.receive(false);
  const alice = t.send();
  await t.journaledChunks(16);
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
  const journaled = await t.journaledChunks(32);
  t.relay.child.kill('SIGKILL');
  assert.equal(await t.relay.exited, null, 'killed by the signal');
  // A new process, same port, same audit log (the relay keeps no other state).
  const port = new URL(t.url).port;
  const relay2 = start('sft-relay', ['--port', port, '--audit-log', path.join(t.work, 'audit.jsonl')]);
  running.push(relay2);
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
  await t.journaledChunks(8);
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
