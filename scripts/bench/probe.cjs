// Preloaded into every benchmarked Node process (node --require): on exit, writes the process's
// own CPU time and peak RSS to $SFT_BENCH_PROBE, so the benchmark measures each process exactly.
const fs = require('node:fs');
const out = process.env.SFT_BENCH_PROBE;
if (out) {
  process.on('exit', () => {
    const cpu = process.cpuUsage();
    const usage = process.resourceUsage();
    fs.writeFileSync(out, JSON.stringify({ cpuSeconds: (cpu.user + cpu.system) / 1e6, maxRssBytes: usage.maxRSS * 1024 }));
  });
}
