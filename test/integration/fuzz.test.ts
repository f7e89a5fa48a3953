/**
 * Property-based fuzzing of a running relay (fast-check): random and near-valid messages from
 * joined clients, while a well-behaved transfer runs beside them. The relay must never crash,
 * must answer with known error codes, must keep no state for the junk, and the honest transfer
 * must arrive byte-identical. Bounded: a fixed number of runs and messages.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fc from 'fast-check';
import { Harness, sha256File, writeRandomFile } from '../helpers/harness';
import { rawConnect, rawJoin } from '../helpers/raw';
import { Identity } from '../../extension/core/crypto/identity';
import { sendFiles } from '../../extension/core/transfer/sender';
import { ErrorCodes } from '../../extension/core/errors';

let h: Harness;
before(async () => {
  h = await Harness.start({ joinRate: { perSecond: 1000, burst: 1000 }, controlRate: { perSecond: 1000, burst: 1000 } });
});
after(() => h.close());

const EVENTS = ['hello', 'offer', 'answer', 'chunk', 'ack', 'done', 'cancel', 'peer.joined', 'x', '__proto__', 'constructor'];
const transferIdLike = fc.stringMatching(/^[A-Za-z0-9_-]{22}$/);
const argument = fc.oneof(
  fc.anything({ maxDepth: 3 }),
  fc.jsonValue({ maxDepth: 3 }),
  fc.uint8Array({ maxLength: 2048 }).map((a) => Buffer.from(a)),
  fc.record({ transferId: transferIdLike, index: fc.integer({ min: -5, max: 1e9 }) }),
  fc.record({ transferId: transferIdLike, accept: fc.boolean() }),
  fc.record({ transferId: transferIdLike, code: fc.constantFrom(...ErrorCodes, 'NOPE'), message: fc.string() }),
  transferIdLike,
  fc.integer(),
);
const message = fc.record({ event: fc.constantFrom(...EVENTS), args: fc.array(argument, { maxLength: 4 }) });

test('random and malformed messages never crash the relay, get coded answers, and an honest transfer completes', async () => {
  const alice = await h.peer('alice');
  const bob = await h.peer('bob');
  await h.until(() => alice.client.peers.has(bob.identity.peerId));
  const src = await h.tempDir();
  const out = await h.tempDir();
  const file = path.join(src, 'honest.bin');
  const sum = await writeRandomFile(file, 80 * 1024 * 1024, 'honest');
  const received = bob.nextOffer().then((o) => o.accept({ directory: out }));
  const honest = sendFiles(alice.client, { paths: [file], to: [alice.client.findPeer('bob')] });

  const codes = new Set<string>();
  let overlapped = false;
  await fc.assert(
    fc.asyncProperty(fc.array(message, { minLength: 1, maxLength: 40 }), async (messages) => {
      overlapped ||= h.relay!.stats().transfers > 0;
      const conn = await rawConnect(h.url);
      const joined = await rawJoin(conn, Identity.generate(), 'fuzzer');
      assert.equal(joined.ok, true);
      for (const { event, args } of messages) {
        if (!conn.socket.connected) break;
        conn.socket.emit(event, ...args);
      }
      await new Promise((r) => setTimeout(r, 20));
      for (const e of conn.errors) codes.add(e.code);
      conn.close();
      const health = await fetch(`${h.url}/healthz`);
      assert.equal(health.status, 200);
    }),
    { numRuns: 150, interruptAfterTimeLimit: 60_000 },
  );

  assert.ok(overlapped, 'the honest transfer was running while the fuzzer was');
  const sent = await honest;
  await received;
  assert.equal(sent.recipients[0]!.outcome, 'done');
  assert.equal(await sha256File(path.join(out, 'honest.bin')), sum);
  for (const code of codes) assert.ok((ErrorCodes as readonly string[]).includes(code), `unknown code ${code}`);
  assert.ok(codes.has('BAD_MESSAGE'), 'the fuzzer provoked refusals');
  await h.until(() => h.relay!.stats().transfers === 0);
});
