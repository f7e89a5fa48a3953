/**
 * keepFreedMemoryForReuse(): after it, memory a collection frees is taken again without page
 * faults, instead of being handed back to the kernel and faulted in anew (allocator.ts). Measured
 * in child processes with the real C library, by page-fault counts, which do not depend on the
 * machine's speed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { keepFreedMemoryForReuse } from '../../extension/core/allocator';

function faults(mode: 'keep' | 'default'): number {
  const child = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', path.join(__dirname, 'fixtures', 'churn.ts'), mode], { encoding: 'utf8' });
  assert.equal(child.status, 0, child.stderr);
  return Number(child.stdout.trim());
}

test('freed chunk buffers are reused, not faulted in again (glibc)', { skip: process.platform !== 'linux' && 'glibc behaviour: Linux only' }, () => {
  const kept = faults('keep');
  const plain = faults('default');
  // 40 rounds of 16 MiB: about 160,000 faults when each round's memory goes back to the kernel,
  // one round's 4,096 or so when it is reused.
  assert.ok(plain > 40_000, `without it, the churn should fault its pages in again (${plain} faults)`);
  assert.ok(kept * 4 < plain, `reused memory should fault far less: ${kept} faults kept, ${plain} without`);
});

test('does nothing off Linux', () => {
  const before = process.memoryUsage().arrayBuffers;
  keepFreedMemoryForReuse('darwin');
  assert.equal(process.memoryUsage().arrayBuffers, before);
});
