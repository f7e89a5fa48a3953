import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { parseBytes } from '../../extension/core/format';

test('parseBytes reads decimal and binary units, and refuses what is not a size', () => {
  const cases: Array<[string, number | undefined]> = [
    ['1048576', 1048576],
    ['500MB', 500e6],
    ['1.5 GB', 1.5e9],
    ['2GiB', 2 * 2 ** 30],
    ['2Gi', 2 * 2 ** 30],
    ['256mi', 256 * 2 ** 20],
    ['10kB', 10_000],
    ['huge', undefined],
    ['2 gigs', undefined],
    ['-5MB', undefined],
    ['', undefined],
  ];
  for (const [text, bytes] of cases) assert.equal(parseBytes(text), bytes, text);
});

test('every size the settings editor accepts is one parseBytes reads (no valid-looking value means "no limit")', () => {
  const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as {
    contributes: { configuration: { properties: Record<string, { pattern?: string; default?: unknown }> } };
  };
  const properties = manifest.contributes.configuration.properties;
  const sizes = ['secureFileTransfer.relay.maxFileSize', 'secureFileTransfer.maxInMemorySize'];
  const samples = ['1', '1b', '1B', '64k', '64kb', '64KiB', '64Ki', '5m', '5MB', '5mib', '5Mi', '2g', '2GB', '2GiB', '2Gi', '1t', '1TB', '1TiB', '1Ti', '1.5GB', ' 3 MiB '];
  for (const key of sizes) {
    const pattern = properties[key]?.pattern;
    assert.ok(pattern, `${key} has a pattern`);
    const accepted = samples.filter((sample) => new RegExp(pattern).test(sample));
    assert.ok(accepted.includes('2Gi') && accepted.includes('5MB'), `${key} accepts the usual sizes`);
    for (const sample of accepted) assert.notEqual(parseBytes(sample), undefined, `${key} accepts "${sample}"`);
    const fallback = properties[key]?.default;
    if (typeof fallback === 'string' && fallback !== '') assert.notEqual(parseBytes(fallback), undefined, `${key}'s default`);
  }
});
