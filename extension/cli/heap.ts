/**
 * Heap sizing for the `sft` process (and the benchmark's load workers, which stand in for `sft`
 * processes). `main.ts` calls it first thing.
 *
 * A transfer allocates buffers much faster than it allocates JavaScript objects: every 1 MiB
 * chunk is read from a socket, decrypted or encrypted, and framed. Those buffers live outside V8's
 * heap, but V8 counts them against its heap limit. A small program like `sft` has about 10 MiB of
 * live objects, so V8 sets that limit at about twice that, and the buffers of two or three chunks
 * in flight reach it every few milliseconds. The result was about 110 full mark-compact
 * collections per GiB moved, a third of the sender's and the receiver's CPU time.
 *
 * With the heap allowed to grow to five times its live size after a collection (V8's
 * `--heap-growing-percent`, which it reads each time it sets the next limit, so setting it here
 * has the same effect as the command-line flag), the limit sits above what a transfer keeps in
 * flight: one or no full collection per GiB, and about 1.5 CPU seconds per GiB less at each end
 * (`npm run bench`). Peak RSS did not change, because the buffers are freed by the cheap young
 * collections instead.
 *
 * Only this standalone process does this. The VS Code extension must not change its host's flags,
 * and needs not: an extension host carries tens of MiB of live objects, which put the limit above
 * a transfer's buffers (a receiver made to carry 68 MB had one full collection per GiB). The
 * relay's heap is larger too and usually needs no help; with this setting its memory with many
 * idle clients grew past its goal (README, Benchmark). A `--heap-growing-percent` given on the
 * command line wins.
 */
import v8 from 'node:v8';

export const HEAP_GROWING_PERCENT = 400;

export function sizeHeapForStreaming(): void {
  if (!process.execArgv.some((flag) => flag.startsWith('--heap-growing-percent'))) {
    v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  }
}
