/**
 * The same memory for every path.
 *
 * On a virtual machine whose guest reports its free pages to the host (virtio-balloon free page
 * reporting, as here), the host takes those pages back, and the guest pays again the first time it
 * uses one. The kernel hands out pages freed recently, not yet reported, before reported ones. So
 * writing 1 GiB to a new file costs about 0.25 s of system time when enough recently freed pages
 * are at hand, and 3 to 3.5 s when they are not (measured here with a plain Node program). Every
 * receiver writes a fresh 1 GiB file, so each path's receiver CPU depended on what ran before it
 * and how long ago: in session 5's runs sft's receiver paid about 1.7 CPU s per GiB that the AEAD
 * floor's receiver, run just before it, did not, and a plain writer's cost here varied from 1.1 to
 * 3.8 s over the day.
 *
 * So before each measured transfer the benchmark touches and frees 2 GiB more memory than the
 * transfer will write, in a process of its own that is not measured. The kernel reports at most
 * about 1 GiB of free memory in one pass (one every few seconds here), so that leaves recently
 * freed pages at hand for the whole transfer: a plain writer then paid 0.25 s per GiB after a
 * 7 s wait, against 1.3 to 1.8 s when only 1 GiB had been freed. Every path then runs as it would
 * on a machine that is not a VM of this kind. Only where a virtio balloon reports free pages (or with
 * SFT_BENCH_WARM=1); SFT_BENCH_WARM=0 turns it off.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const BALLOONS = '/sys/bus/virtio/drivers/virtio_balloon';
/** VIRTIO_BALLOON_F_REPORTING, the free page reporting feature (virtio spec 5.5.3). */
const REPORTING_FEATURE = 5;
const PIECE = 256 * 1024 * 1024;
/** More than a transfer writes: what one reporting pass may take back still leaves enough (above). */
const MARGIN = 2 * 1024 ** 3;
/** Left free whatever is asked: warming must never push the machine into the OOM killer. */
const SPARE = 1024 ** 3;

export type PageCondition = 'warmed' | 'as found';

/** A virtio balloon that reports free pages to the host: the VMs this is about. */
function reportsFreePages(): boolean {
  try {
    return fs
      .readdirSync(BALLOONS)
      .filter((entry) => entry.startsWith('virtio'))
      .some((device) => fs.readFileSync(path.join(BALLOONS, device, 'features'), 'utf8')[REPORTING_FEATURE] === '1');
  } catch {
    return false;
  }
}

/** Whether the benchmark prepares memory before each transfer here (SFT_BENCH_WARM=0 or 1 decides). */
export function pageCondition(): PageCondition {
  const setting = process.env.SFT_BENCH_WARM;
  if (setting === '0' || setting === '1') return setting === '1' ? 'warmed' : 'as found';
  return reportsFreePages() ? 'warmed' : 'as found';
}

/**
 * Before a transfer that writes `bytes`: touches that much fresh memory and MARGIN more (less, if
 * the machine has not that much free) in a child process, which then exits and frees it.
 */
export function warmPages(bytes: number): void {
  if (pageCondition() !== 'warmed') return;
  const pieces = Math.floor(Math.min(bytes + MARGIN, os.freemem() - SPARE) / PIECE);
  if (pieces < 1) return;
  const script = `const kept = []; for (let i = 0; i < ${pieces}; i++) kept.push(Buffer.allocUnsafeSlow(${PIECE}).fill(1));`;
  const result = spawnSync(process.execPath, ['--max-old-space-size=64', '-e', script], { stdio: 'inherit' });
  if (result.status !== 0) throw new Error(`could not prepare ${pieces * 256} MiB of memory (exit ${result.status ?? result.signal})`);
}
