// Generates realistic sample files for `npm run demo`, entirely in-process (no external tools).
// Every file carries a per-run marker in its plaintext bytes, so the demo can later prove that the
// marker never shows up in the relay's traffic (i.e. the relay only ever sees ciphertext).
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { crc32, deflateSync } from 'node:zlib';

export interface SampleFile {
  name: string;
  path: string;
  size: number;
  sha256: string;
  kind: string;
  marker: string;
}

const DEFAULT_VIDEO_BYTES = 300 * 1024 * 1024;
const VIDEO_BLOCK_BYTES = 4 * 1024 * 1024;
const randomBytesAsync = promisify(randomBytes);

export async function generateSamples(dir: string, options: { videoBytes?: number } = {}): Promise<SampleFile[]> {
  const videoBytes = options.videoBytes ?? DEFAULT_VIDEO_BYTES;
  const marker = `SFT-MARKER-${randomBytes(8).toString('hex')}`;
  await mkdir(dir, { recursive: true });

  const small: Array<[name: string, kind: string, bytes: Buffer]> = [
    ['quarterly-report.docx', 'Word document', buildDocx(marker)],
    ['design-spec.pdf', 'PDF', buildPdf(marker)],
    ['architecture.png', 'PNG image', buildPng(marker)],
  ];
  const files: SampleFile[] = [];
  for (const [name, kind, bytes] of small) {
    const filePath = path.resolve(dir, name);
    await writeFile(filePath, bytes);
    files.push({ name, path: filePath, size: bytes.length, sha256: sha256Hex(bytes), kind, marker });
  }

  const videoPath = path.resolve(dir, 'demo-video.mp4');
  const videoSha = await writeVideoLike(videoPath, videoBytes, marker);
  files.push({ name: 'demo-video.mp4', path: videoPath, size: videoBytes, sha256: videoSha, kind: 'video-sized binary', marker });
  return files;
}

function sha256Hex(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

// ---------------------------------------------------------------------------------------------
// DOCX: a minimal OOXML package inside a hand-written ZIP.

function buildDocx(marker: string): Buffer {
  const W = 'http://schemas.openxmlformats.org/wordprocessingml/2006/main';
  const para = (text: string): string => `<w:p><w:r><w:t xml:space="preserve">${text}</w:t></w:r></w:p>`;
  const created = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
  return buildZip([
    // Word (and `file`) expect [Content_Types].xml to be the first entry.
    {
      name: '[Content_Types].xml',
      data: xml(
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">' +
          '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>' +
          '<Default Extension="xml" ContentType="application/xml"/>' +
          '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>' +
          '<Override PartName="/docProps/core.xml" ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>' +
          '</Types>',
      ),
    },
    {
      name: '_rels/.rels',
      data: xml(
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">' +
          '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/>' +
          '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties" Target="docProps/core.xml"/>' +
          '</Relationships>',
      ),
    },
    {
      name: 'word/document.xml',
      data: xml(
        `<w:document xmlns:w="${W}"><w:body>` +
          para('Quarterly Report') +
          para('Revenue grew 12% quarter over quarter; churn held steady at 2.1%.') +
          para(`Reference: ${marker}`) +
          '<w:sectPr><w:pgSz w:w="12240" w:h="15840"/><w:pgMar w:top="1440" w:right="1440" w:bottom="1440" w:left="1440" w:header="720" w:footer="720" w:gutter="0"/></w:sectPr>' +
          '</w:body></w:document>',
      ),
    },
    {
      name: 'docProps/core.xml',
      data: xml(
        '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" ' +
          'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" ' +
          'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">' +
          '<dc:title>Quarterly Report</dc:title><dc:creator>Secure File Transfer demo</dc:creator>' +
          `<dcterms:created xsi:type="dcterms:W3CDTF">${created}</dcterms:created>` +
          '</cp:coreProperties>',
      ),
    },
  ]);
}

function xml(body: string): Buffer {
  return Buffer.from(`<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n${body}`, 'utf8');
}

// Entries are STORED (method 0), not deflated, so the marker stays visible in the raw file bytes.
function buildZip(entries: Array<{ name: string; data: Buffer }>, when = new Date()): Buffer {
  const dosTime = (when.getHours() << 11) | (when.getMinutes() << 5) | (when.getSeconds() >> 1);
  const dosDate = ((when.getFullYear() - 1980) << 9) | ((when.getMonth() + 1) << 5) | when.getDate();
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;

  for (const { name, data } of entries) {
    const nameBytes = Buffer.from(name, 'utf8');
    const crc = crc32(data);
    // Fields shared by local header (from offset 4) and central header (from offset 6).
    const common = Buffer.alloc(26);
    common.writeUInt16LE(20, 0); // version needed to extract (2.0)
    common.writeUInt16LE(0x0800, 2); // flags: bit 11 = names are UTF-8
    common.writeUInt16LE(0, 4); // method 0 = stored
    common.writeUInt16LE(dosTime, 6);
    common.writeUInt16LE(dosDate, 8);
    common.writeUInt32LE(crc, 10);
    common.writeUInt32LE(data.length, 14); // compressed size
    common.writeUInt32LE(data.length, 18); // uncompressed size
    common.writeUInt16LE(nameBytes.length, 22);
    common.writeUInt16LE(0, 24); // extra field length

    const local = Buffer.concat([u32(0x04034b50), common, nameBytes, data]);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4); // version made by (MS-DOS, 2.0)
    common.copy(central, 6);
    // comment length, disk number, internal/external attributes stay 0.
    central.writeUInt32LE(offset, 42); // offset of the local header
    centrals.push(central, nameBytes);
    locals.push(local);
    offset += local.length;
  }

  const centralDir = Buffer.concat(centrals);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(entries.length, 8); // entries on this disk
  eocd.writeUInt16LE(entries.length, 10); // entries in total
  eocd.writeUInt32LE(centralDir.length, 12);
  eocd.writeUInt32LE(offset, 16); // central directory starts right after the last local entry
  return Buffer.concat([...locals, centralDir, eocd]);
}

function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value, 0);
  return b;
}

// ---------------------------------------------------------------------------------------------
// PDF: one Letter page with a line of Helvetica text. Content stream is uncompressed so the
// marker is visible in the raw bytes.

function buildPdf(marker: string): Buffer {
  const escape = (s: string): string => s.replace(/[\\()]/g, (c) => `\\${c}`);
  const content = [
    'BT /F1 24 Tf 72 700 Td (Design Specification) Tj ET',
    `BT /F1 12 Tf 72 670 Td (${escape(`Document reference: ${marker}`)}) Tj ET`,
  ].join('\n');
  const objects = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    '<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>',
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>',
    `<< /Length ${Buffer.byteLength(content, 'latin1')} >>\nstream\n${content}\nendstream`,
  ];

  // The second header line holds high-bit bytes so tools treat the file as binary (PDF spec 7.5.2).
  let out = '%PDF-1.4\n%\xe2\xe3\xcf\xd3\n';
  const offsets: number[] = [];
  objects.forEach((body, i) => {
    offsets.push(Buffer.byteLength(out, 'latin1'));
    out += `${i + 1} 0 obj\n${body}\nendobj\n`;
  });
  const xrefOffset = Buffer.byteLength(out, 'latin1');
  // Each xref entry is exactly 20 bytes: 10-digit offset, 5-digit generation, type, then " \n".
  out += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`;
  for (const off of offsets) out += `${String(off).padStart(10, '0')} 00000 n \n`;
  out += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xrefOffset}\n%%EOF\n`;
  return Buffer.from(out, 'latin1');
}

// ---------------------------------------------------------------------------------------------
// PNG: 320x200 8-bit RGB gradient with a checker overlay; marker in a tEXt chunk.

function buildPng(marker: string, width = 320, height = 200): Buffer {
  const chunk = (type: string, data: Buffer): Buffer => {
    const typeAndData = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length, 0);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(typeAndData), 0); // CRC covers type + data, not the length
    return Buffer.concat([len, typeAndData, crc]);
  };

  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.writeUInt8(8, 8); // bit depth
  ihdr.writeUInt8(2, 9); // colour type 2 = truecolour RGB
  // compression, filter and interlace methods all 0.

  const stride = 1 + width * 3; // each scanline starts with its filter byte (0 = None)
  const raw = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = y * stride + 1 + x * 3;
      const checker = ((x >> 4) + (y >> 4)) % 2 === 0 ? 40 : 0;
      raw[p] = Math.round((x / (width - 1)) * 215) + checker;
      raw[p + 1] = Math.round((y / (height - 1)) * 215) + checker;
      raw[p + 2] = 160 + checker;
    }
  }

  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('tEXt', Buffer.from(`Comment\0${marker}`, 'latin1')),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

// ---------------------------------------------------------------------------------------------
// "Video": ISO-BMFF-looking header (ftyp + free box with the marker + mdat header), then random
// bytes streamed in blocks. Hashes on the fly, so the file is never held in memory or re-read.

async function writeVideoLike(filePath: string, totalBytes: number, marker: string): Promise<string> {
  const ftyp = Buffer.concat([u32be(32), Buffer.from('ftypisom', 'latin1'), u32be(0x200), Buffer.from('isomiso2avc1mp41', 'latin1')]);
  const note = Buffer.from(`demo ${marker}`, 'latin1');
  const free = Buffer.concat([u32be(8 + note.length), Buffer.from('free', 'latin1'), note]);
  const header = Buffer.concat([ftyp, free, Buffer.alloc(8)]);
  if (!Number.isSafeInteger(totalBytes) || totalBytes < header.length) {
    throw new RangeError(`videoBytes must be an integer >= ${header.length}`);
  }
  // mdat runs to end of file; size 0 means exactly that if the length won't fit in 32 bits.
  const mdatSize = totalBytes - ftyp.length - free.length;
  header.writeUInt32BE(mdatSize <= 0xffffffff ? mdatSize : 0, header.length - 8);
  header.write('mdat', header.length - 4, 'latin1');

  const hash = createHash('sha256');
  async function* blocks(): AsyncGenerator<Buffer> {
    hash.update(header);
    yield header;
    for (let left = totalBytes - header.length; left > 0; ) {
      const block = await randomBytesAsync(Math.min(VIDEO_BLOCK_BYTES, left));
      hash.update(block);
      left -= block.length;
      yield block;
    }
  }
  // pipeline() only pulls the next block once the write stream has drained (backpressure).
  await pipeline(blocks, createWriteStream(filePath));
  return hash.digest('hex');
}

function u32be(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value, 0);
  return b;
}
