// Preloaded into every benchmarked Node process (node --require): on exit, writes the process's
// own CPU time and peak RSS to $SFT_BENCH_PROBE, so the benchmark measures each process exactly.
// SIGUSR2 marks the moment a transfer starts: the CPU time spent after it is written as well, so
// that a long-lived relay's figure per GiB forwarded leaves out its own start-up.
const fs = require('node:fs');
const out = process.env.SFT_BENCH_PROBE;
if (out) {
  let mark;
  process.on('SIGUSR2', () => {
    mark = process.cpuUsage();
  });
  process.on('exit', () => {
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
      }),
    );
  });
}
