/** Terminal output for the command-line client: a one-line progress bar on a TTY, plain lines elsewhere. */
import readline from 'node:readline/promises';
import { formatBytes, formatDuration, formatRate, type Progress } from '../core/format';

export function progressPrinter(label: string, stream: NodeJS.WriteStream = process.stderr): { update(p: Progress): void; end(): void } {
  let lastPlainDecile = -1;
  let drawn = false;
  return {
    update(p) {
      const fraction = p.total > 0 ? p.bytes / p.total : 1;
      const figures = `${formatBytes(p.bytes)} / ${formatBytes(p.total)}  ${formatRate(p.rate)}  ${formatDuration(p.eta)} left`;
      if (stream.isTTY) {
        const width = 24;
        const filled = Math.round(fraction * width);
        stream.write(`\r${label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}%  ${figures}\x1b[K`);
        drawn = true;
        return;
      }
      // Plain output (logs, CI): one line per tenth, so a log shows progress without flooding.
      const decile = Math.floor(fraction * 10);
      if (decile > lastPlainDecile) {
        lastPlainDecile = decile;
        stream.write(`${label} ${(fraction * 100).toFixed(0)}%  ${figures}\n`);
      }
    },
    end() {
      if (drawn) stream.write('\n');
    },
  };
}

/** Asks a yes/no question on the terminal; `defaultYes` decides an empty answer. */
export async function confirm(question: string, defaultYes = false): Promise<boolean> {
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = (await rl.question(`${question} ${defaultYes ? '[Y/n]' : '[y/N]'} `)).trim().toLowerCase();
    return answer === '' ? defaultYes : answer === 'y' || answer === 'yes';
  } finally {
    rl.close();
  }
}
