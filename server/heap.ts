/**
 * Node flags the relay process runs with. They cannot be set from inside a running process, so
 * every launcher passes them: `bin/sft-relay.js` (its `#!` line), `deploy/sft-relay.service`,
 * `deploy/Containerfile`, and the benchmark. test/unit/relay-flags.test.ts checks that they
 * agree.
 *
 * `--initial-old-space-size=64`: V8 skips full collections while its old generation, plus the
 * external memory allocated since the last one, stays under this size. ("If the embedder
 * pre-configures the initial old generation size, then allow V8 to skip full GCs below that
 * threshold", heap.cc.)
 *
 * Why: a relay's JavaScript heap is small (about 15 MiB with a few clients), but the
 * `ArrayBuffer`s of chunks in flight swing by some 30 MiB between young-generation collections,
 * and V8 counts that swing against the old generation's limit. Before a process's first full
 * collection that limit is V8's generous initial one. After it, the limit is the live heap times a
 * small factor, only a few MiB above it, so every swing started another full collection, about
 * ten a second during a transfer. Measured in the benchmark's load test: once a burst of 50
 * simultaneous transfers had made the relay collect in full for the first time, every later
 * transfer cost it 2.5 times the CPU (user time 0.6 to 2.5 s per GiB), and stayed so. A relay
 * that runs for weeks is always past its first full collection. With a 64 MiB floor the relay
 * runs as it did when fresh, and the limits of a large heap (many idle clients) are unchanged:
 * 1,000 idle clients took the relay to 141 MiB RSS, as without the flag. `sft`, which is
 * short-lived and has a fixed growing factor of its own (extension/cli/heap.ts), does not need it.
 */
export const RELAY_NODE_FLAGS: readonly string[] = ['--initial-old-space-size=64'];
