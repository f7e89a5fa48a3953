/**
 * Memory reuse for the programs that move a transfer's bytes: `sft` and `sft-relay` (and the
 * benchmark's baselines, so they are measured on the same terms).
 *
 * Every chunk a transfer moves passes through fresh 1 MiB buffers: the frame `ws` assembles from
 * socket reads, the ciphertext, the plaintext. Node takes them from the C library's `malloc`. By
 * default glibc gives the top of its heap back to the kernel as soon as more than twice its mmap
 * threshold lies free there; with buffers of 1 MiB that threshold settles at about 1 MiB, so each
 * young-generation collection, which frees some 32 MiB of dead buffers at once, hands most of them
 * back, and the next chunks fault the same amount in again, page by page, zeroed by the kernel.
 * On a virtual machine whose balloon reports free pages to its host each such page costs far
 * more (README, Benchmark). Measured here: 50,000 to 95,000 page faults per GiB in each process
 * instead of 20,000, and about 2 CPU seconds per GiB for the three processes of a transfer.
 *
 * glibc raises both thresholds by itself when a program frees a block larger than the current mmap
 * threshold (up to 32 MiB on 64-bit systems): the mmap threshold becomes that block's size and the
 * trim threshold twice it (mallopt(3), "dynamic mmap threshold"). So the program allocates one
 * such block and lets it go: its pages are never touched, so it costs no memory, and once the next
 * collection frees it, up to about 62 MiB of freed memory stays with the process for the next
 * chunks instead of going back to the kernel. Peak RSS does not change (what a transfer frees is
 * what it takes again), nor does a fresh process's; but RSS falls back less after a burst (a relay
 * with 1,000 idle clients: 141 to 144 MiB instead of 135).
 *
 * An administrator's own MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ (or their GLIBC_TUNABLES
 * forms) turns the dynamic thresholds off, and then this does nothing. Other C libraries (macOS,
 * Windows, musl) are not affected: there the block is a plain allocation that is freed again, so
 * it runs on Linux only.
 *
 * The VS Code extension does not do this: the thresholds are process-wide, and the extension host
 * is shared with every other extension.
 */

/**
 * Just under glibc's 32 MiB ceiling for a threshold, page header included (a larger block would
 * not move the thresholds at all), and above any block the programs free in normal use.
 */
export const THRESHOLD_RAISING_BLOCK = 31 * 1024 * 1024;

/** Asks glibc to keep freed memory for reuse (see above). Call once, early; cheap and idempotent. */
export function keepFreedMemoryForReuse(platform: NodeJS.Platform = process.platform): void {
  if (platform !== 'linux') return;
  // Uninitialised and outside Node's buffer pool: one malloc of its own, mapped but never touched,
  // freed by the next collection (its size alone makes V8 schedule one soon).
  Buffer.allocUnsafeSlow(THRESHOLD_RAISING_BLOCK);
}
