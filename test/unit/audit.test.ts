import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setImmediate as nextMacrotask } from 'node:timers/promises';
import { AUDIT_FIELDS, fileAudit, type AuditEvent } from '../../server/audit';

const PEER_A = 'AAAAAAAAAAAAAAAAAAAAAAAAAA';
const PEER_B = 'BBBBBBBBBBBBBBBBBBBBBBBBBB';

/** An offer whose `chunks` carries a counter, so order and gaps show in the trail. */
const offer = (n: number, to: string[] = [PEER_B]): AuditEvent => ({
  event: 'offer',
  transfer: `t${String(n).padStart(21, '0')}`,
  from: PEER_A,
  to,
  cipherBytes: n * 1000,
  chunks: n,
});

async function tempDir(t: TestContext): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-audit-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

interface Line {
  ts: string;
  event: string;
  chunks?: number;
  to?: string[];
}

async function readLines(file: string): Promise<Line[]> {
  const text = await fs.readFile(file, 'utf8');
  assert.ok(text.endsWith('\n'), `${file} ends with a whole line`);
  return text
    .slice(0, -1)
    .split('\n')
    .map((raw) => {
      const line = JSON.parse(raw) as Line;
      assert.equal(typeof line.ts, 'string');
      assert.ok(!Number.isNaN(Date.parse(line.ts)), `ts ${line.ts} is a date`);
      return line;
    });
}

async function assertMode600(file: string): Promise<void> {
  if (process.platform === 'win32') return;
  assert.equal((await fs.stat(file)).mode & 0o777, 0o600, `${file} has mode 0600`);
}

const counters = (lines: Line[]) => lines.map((line) => line.chunks);
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

test('rotates by size, keeps the newest files, never splits or reorders lines', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'audit.jsonl');
  const maxBytes = 2000;
  const sink = fileAudit(file, { maxBytes, keep: 3 });
  const total = 300;
  // Bursts with pauses in between, so rotation happens while more lines keep arriving.
  for (let n = 0; n < total; n++) {
    sink.write(offer(n));
    if (n % 17 === 0) await nextMacrotask();
  }
  await sink.close();

  const names = ['audit.jsonl.3', 'audit.jsonl.2', 'audit.jsonl.1', 'audit.jsonl'];
  assert.deepEqual((await fs.readdir(dir)).sort(), [...names].sort());
  const files = await Promise.all(
    names.map(async (name) => {
      const full = path.join(dir, name);
      await assertMode600(full);
      const bytes = (await fs.stat(full)).size;
      assert.ok(bytes > 0 && bytes <= maxBytes, `${name} holds ${bytes} bytes, at most ${maxBytes}`);
      return { name, bytes, lines: await readLines(full), firstLineBytes: Buffer.byteLength((await fs.readFile(full, 'utf8')).split('\n')[0]!) + 1 };
    }),
  );
  // Rotation happened only when the next line would not fit.
  for (let i = 0; i < files.length - 1; i++) {
    assert.ok(files[i]!.bytes + files[i + 1]!.firstLineBytes > maxBytes, `${files[i]!.name} was rotated early`);
  }
  const all = files.flatMap((f) => f.lines);
  assert.ok(all.every((line) => line.event === 'offer'));
  const first = all[0]!.chunks!;
  assert.ok(first > 0, 'older lines were rotated away');
  assert.deepEqual(counters(all), range(first, total), 'the newest lines, in order, without gaps');
});

test('a restarted relay appends and counts the existing size', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'audit.jsonl');
  const maxBytes = 2000;

  const first = fileAudit(file, { maxBytes, keep: 3 });
  for (let n = 0; n < 8; n++) first.write(offer(n));
  await first.close();
  const before = (await fs.stat(file)).size;
  assert.ok(before > maxBytes / 2 && before < maxBytes, `first run wrote ${before} bytes`);
  assert.deepEqual(await fs.readdir(dir), ['audit.jsonl']);

  const second = fileAudit(file, { maxBytes, keep: 3 });
  for (let n = 8; n < 16; n++) second.write(offer(n));
  await second.close();

  assert.deepEqual((await fs.readdir(dir)).sort(), ['audit.jsonl', 'audit.jsonl.1']);
  const older = await readLines(`${file}.1`);
  const newer = await readLines(file);
  assert.ok((await fs.stat(`${file}.1`)).size <= maxBytes);
  assert.ok(older.length > 8, 'the second run appended to the first run’s file before rotating');
  assert.deepEqual(counters([...older, ...newer]), range(0, 16));
  await assertMode600(file);
  await assertMode600(`${file}.1`);
});

test('an existing file already over maxBytes is rotated before the first new line', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'audit.jsonl');
  const unlimited = fileAudit(file);
  for (let n = 0; n < 40; n++) unlimited.write(offer(n));
  await unlimited.close();
  const before = await fs.readFile(file, 'utf8');
  assert.ok(before.length > 2000);

  const limited = fileAudit(file, { maxBytes: 2000 });
  limited.write(offer(40));
  await limited.close();
  assert.equal(await fs.readFile(`${file}.1`, 'utf8'), before, 'the old file is kept whole');
  assert.deepEqual(counters(await readLines(file)), [40]);
});

test('a line larger than maxBytes gets a fresh file of its own', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'audit.jsonl');
  const maxBytes = 400;
  const many = Array.from({ length: 20 }, (_, i) => `${PEER_B.slice(1)}${String.fromCharCode(65 + i)}`);
  const sink = fileAudit(file, { maxBytes, keep: 5 });
  sink.write(offer(0, many)); // oversized, into the empty file
  sink.write(offer(1));
  sink.write(offer(2, many)); // oversized, after a small line
  sink.write(offer(3, many)); // oversized, after an oversized line
  sink.write(offer(4));
  sink.write(offer(5));
  await sink.close();

  const names = ['audit.jsonl.4', 'audit.jsonl.3', 'audit.jsonl.2', 'audit.jsonl.1', 'audit.jsonl'];
  assert.deepEqual((await fs.readdir(dir)).sort(), [...names].sort());
  const perFile = await Promise.all(names.map(async (name) => counters(await readLines(path.join(dir, name)))));
  assert.deepEqual(perFile, [[0], [1], [2], [3], [4, 5]]);
  for (const name of ['audit.jsonl.4', 'audit.jsonl.2', 'audit.jsonl.1']) {
    assert.ok((await fs.stat(path.join(dir, name))).size > maxBytes, `${name} holds the lone oversized line`);
  }
  for (const name of ['audit.jsonl.3', 'audit.jsonl']) assert.ok((await fs.stat(path.join(dir, name))).size <= maxBytes);
  for (const name of names) await assertMode600(path.join(dir, name));
});

test('without maxBytes the file never rotates, and it exists before the first event', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'audit.jsonl');
  const sink = fileAudit(file);
  while (!(await fs.stat(file).catch(() => undefined))) await nextMacrotask();
  await assertMode600(file);
  for (let n = 0; n < 200; n++) sink.write(offer(n));
  await sink.close();
  sink.write(offer(200)); // after close: ignored, and harmless
  assert.deepEqual(await fs.readdir(dir), ['audit.jsonl']);
  assert.deepEqual(counters(await readLines(file)), range(0, 200));
  assert.equal(await sink.close(), undefined, 'close is idempotent');
});

test('keep: 0 discards the full file', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'audit.jsonl');
  const sink = fileAudit(file, { maxBytes: 500, keep: 0 });
  for (let n = 0; n < 20; n++) sink.write(offer(n));
  await sink.close();
  assert.deepEqual(await fs.readdir(dir), ['audit.jsonl']);
  const lines = counters(await readLines(file));
  assert.deepEqual(lines, range(lines[0]!, 20));
});

test('bad options are refused; write errors reach onError and close still resolves', async (t) => {
  for (const options of [{ maxBytes: 0 }, { maxBytes: -1 }, { maxBytes: Number.NaN }, { keep: -1 }, { keep: 1.5 }]) {
    assert.throws(() => fileAudit('unused.jsonl', options), RangeError, JSON.stringify(options));
  }
  const dir = await tempDir(t);
  const errors: Error[] = [];
  const sink = fileAudit(path.join(dir, 'missing', 'audit.jsonl'), { onError: (error) => errors.push(error) });
  sink.write(offer(0));
  await sink.close();
  assert.equal(errors.length, 1);
  assert.equal((errors[0] as NodeJS.ErrnoException).code, 'ENOENT');
});

test('AUDIT_FIELDS documents every field', () => {
  assert.deepEqual(
    Object.keys(AUDIT_FIELDS).sort(),
    ['ts', 'event', 'peer', 'address', 'code', 'transfer', 'from', 'to', 'by', 'cipherBytes', 'chunks', 'durationMs'].sort(),
  );
  for (const text of Object.values(AUDIT_FIELDS)) assert.ok(text.length > 0);
});
