import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { crc32, inflateRawSync } from 'node:zlib';
import { generateSamples } from '../../scripts/samples';
import type { SampleFile } from '../../scripts/samples';

const VIDEO_BYTES = 5 * 1024 * 1024 + 123; // deliberately not a multiple of the block size

let dir: string;
let samples: SampleFile[];
const byName = (name: string): SampleFile => {
  const s = samples.find((f) => f.name === name);
  assert.ok(s, `missing sample ${name}`);
  return s;
};

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'sft-samples-'));
  samples = await generateSamples(path.join(dir, 'out'), { videoBytes: VIDEO_BYTES });
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('writes the four samples with correct size, sha256, and marker', async () => {
  assert.deepEqual(samples.map((s) => s.name).sort(), ['architecture.png', 'demo-video.mp4', 'design-spec.pdf', 'quarterly-report.docx']);
  for (const s of samples) {
    assert.match(s.marker, /^SFT-MARKER-[0-9a-f]{16}$/);
    assert.ok(s.kind.length > 0);
    assert.equal(path.dirname(s.path), path.join(dir, 'out'));
    const bytes = await readFile(s.path);
    assert.equal((await stat(s.path)).size, s.size, s.name);
    assert.equal(bytes.length, s.size, s.name);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), s.sha256, s.name);
    assert.ok(bytes.includes(Buffer.from(s.marker)), `${s.name} should contain its marker in plaintext`);
  }
  assert.equal(byName('demo-video.mp4').size, VIDEO_BYTES);
});

test('video-sized binary starts with an ftyp box', async () => {
  const bytes = await readFile(byName('demo-video.mp4').path);
  assert.equal(bytes.toString('latin1', 4, 8), 'ftyp');
  assert.equal(bytes.toString('latin1', 8, 12), 'isom');
  const marker = Buffer.from(byName('demo-video.mp4').marker);
  assert.ok(bytes.indexOf(marker) < 4096, 'marker should be near the start');
});

test('PNG parses back with valid signature and chunk CRCs', async () => {
  const png = await readFile(byName('architecture.png').path);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const types: string[] = [];
  let pos = 8;
  while (pos < png.length) {
    const len = png.readUInt32BE(pos);
    const typeAndData = png.subarray(pos + 4, pos + 8 + len);
    const type = typeAndData.toString('latin1', 0, 4);
    assert.equal(png.readUInt32BE(pos + 8 + len), crc32(typeAndData), `CRC of ${type}`);
    types.push(type);
    pos += 12 + len;
  }
  assert.equal(pos, png.length);
  assert.equal(types[0], 'IHDR');
  assert.equal(types.at(-1), 'IEND');
  assert.ok(types.includes('IDAT') && types.includes('tEXt'));
  const width = png.readUInt32BE(16);
  const height = png.readUInt32BE(20);
  assert.deepEqual([width, height, png[24], png[25]], [320, 200, 8, 2]);
});

test('DOCX zip parses back via the central directory with valid CRCs', async () => {
  const zip = await readFile(byName('quarterly-report.docx').path);
  const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  assert.ok(eocd >= 0, 'end of central directory record');
  const count = zip.readUInt16LE(eocd + 10);
  const cdSize = zip.readUInt32LE(eocd + 12);
  let pos = zip.readUInt32LE(eocd + 16);
  assert.equal(pos + cdSize, eocd, 'central directory ends where EOCD begins');

  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    assert.equal(zip.readUInt32LE(pos), 0x02014b50, 'central header signature');
    const method = zip.readUInt16LE(pos + 10);
    const crc = zip.readUInt32LE(pos + 16);
    const compSize = zip.readUInt32LE(pos + 20);
    const size = zip.readUInt32LE(pos + 24);
    const nameLen = zip.readUInt16LE(pos + 28);
    const extraLen = zip.readUInt16LE(pos + 30);
    const commentLen = zip.readUInt16LE(pos + 32);
    const localOffset = zip.readUInt32LE(pos + 42);
    const name = zip.toString('utf8', pos + 46, pos + 46 + nameLen);
    names.push(name);

    // The local header must agree with the central one.
    assert.equal(zip.readUInt32LE(localOffset), 0x04034b50, `local header of ${name}`);
    assert.equal(zip.readUInt32LE(localOffset + 14), crc);
    assert.equal(zip.readUInt32LE(localOffset + 18), compSize);
    assert.equal(zip.readUInt32LE(localOffset + 22), size);
    const localNameLen = zip.readUInt16LE(localOffset + 26);
    assert.equal(zip.toString('utf8', localOffset + 30, localOffset + 30 + localNameLen), name);
    const dataStart = localOffset + 30 + localNameLen + zip.readUInt16LE(localOffset + 28);
    const raw = zip.subarray(dataStart, dataStart + compSize);
    const data = method === 8 ? inflateRawSync(raw) : raw;
    assert.ok(method === 0 || method === 8, `supported method for ${name}`);
    assert.equal(data.length, size, `size of ${name}`);
    assert.equal(crc32(data), crc, `CRC of ${name}`);
    pos += 46 + nameLen + extraLen + commentLen;
  }
  assert.equal(names[0], '[Content_Types].xml');
  for (const required of ['[Content_Types].xml', '_rels/.rels', 'word/document.xml']) {
    assert.ok(names.includes(required), `missing ${required}`);
  }
});

test('PDF has header, trailer and an xref table whose offsets point at objects', async () => {
  const pdf = (await readFile(byName('design-spec.pdf').path)).toString('latin1');
  assert.ok(pdf.startsWith('%PDF-1.4'));
  assert.ok(pdf.trimEnd().endsWith('%%EOF'));
  const startxref = /startxref\s+(\d+)\s+%%EOF\s*$/.exec(pdf);
  assert.ok(startxref);
  const xrefAt = Number(startxref[1]);
  assert.ok(pdf.startsWith('xref', xrefAt));

  const header = /^xref\n0 (\d+)\n/.exec(pdf.slice(xrefAt));
  assert.ok(header);
  const size = Number(header[1]);
  const entriesAt = xrefAt + header[0].length;
  for (let i = 0; i < size; i++) {
    const entry = pdf.slice(entriesAt + i * 20, entriesAt + (i + 1) * 20);
    const m = /^(\d{10}) (\d{5}) ([fn])(?: \n|\r\n| \r)$/.exec(entry);
    assert.ok(m, `xref entry ${i} is 20 bytes: ${JSON.stringify(entry)}`);
    if (i === 0) {
      assert.equal(m[3], 'f');
      continue;
    }
    assert.equal(m[3], 'n');
    assert.ok(pdf.startsWith(`${i} 0 obj`, Number(m[1])), `xref offset of object ${i}`);
  }
  assert.match(pdf, new RegExp(`trailer\\s*<<[^>]*/Size ${size}\\b`));
});

test('file(1) recognises the formats', async (t) => {
  try {
    execFileSync('file', ['--version'], { stdio: 'ignore' });
  } catch {
    t.skip('the `file` command is not installed');
    return;
  }
  const describe = (name: string): string => execFileSync('file', ['-b', byName(name).path], { encoding: 'utf8' });
  assert.match(describe('quarterly-report.docx'), /Microsoft Word 2007\+/);
  assert.match(describe('design-spec.pdf'), /PDF document, version 1\.4/);
  assert.match(describe('architecture.png'), /PNG image data, 320 x 200, 8-bit\/color RGB/);
  assert.match(describe('demo-video.mp4'), /ISO Media/);
});
