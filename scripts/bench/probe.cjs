// Preloaded into every benchmarked Node process (node --require): on exit, writes the process's
// own CPU time and peak RSS to $SFT_BENCH_PROBE, so the benchmark measures each process exactly.
// SIGUSR2 marks the moment a transfer starts: the CPU time spent after it is written as well, so
// that a long-lived relay's figure per GiB forwarded leaves out its own start-up. It also counts
// V8's full (mark-compact) collections and the time all collections took, which is where a small
// process moving buffers can lose a third of its CPU (extension/cli/heap.ts).
const fs = require('node:fs');
const { PerformanceObserver, constants } = require('node:perf_hooks');
const out = process.env.SFT_BENCH_PROBE;
if (out) {
  let mark;
  let fullGcs = 0;
  let gcMs = 0;
  const count = (entries) => {
    for (const e of entries) {
      gcMs += e.duration;
      // A full collection finished after incremental marking is reported as 'incremental'.
      if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR || e.detail?.kind === constants.NODE_PERFORMANCE_GC_INCREMENTAL) fullGcs += 1;
    }
  };
  const gcs = new PerformanceObserver((list) => count(list.getEntries()));
  gcs.observe({ entryTypes: ['gc'] });
  process.on('SIGUSR2', () => {
    mark = process.cpuUsage();
  });
  process.on('exit', () => {
    count(gcs.takeRecords());
    const cpu = process.cpuUsage();
    const usage = process.resourceUsage();
    const since = mark && process.cpuUsage(mark);
    fs.writeFileSync(
      out,
      JSON.stringify({
        cpuSeconds: (cpu.user + cpu.system) / 1e6,
        userSeconds: cpu.user / 1e6,
        systemSeconds: cpu.system / 1e6,
        ...(since ? { cpuSecondsSinceMark: (since.user + since.system) / 1e6 } : {}),
        maxRssBytes: usage.maxRSS * 1024,
        fullGcs,
        gcSeconds: gcMs / 1000,
      }),
    );
  });
}
