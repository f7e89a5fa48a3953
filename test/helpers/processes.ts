/** Real `sft-relay` and `sft` processes, started from the built bundles in bin/. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { after } from 'node:test';

const ROOT = path.resolve(__dirname, '..', '..');

export interface Running {
  readonly child: ChildProcess;
  readonly stdout: string[];
  readonly stderr: string[];
  /** Resolves with the exit code. */
  readonly exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Every process a test file started and that is still running. */
const running = new Set<ChildProcess>();

// Whatever a failed test left behind is stopped when its file ends: a stray receiver would
// otherwise keep the file's process alive (and take names the next tests use). Only under the
// test runner (test/vscode/electron.ts also imports this module, as a plain script).
if (process.env.NODE_TEST_CONTEXT) {
  after(async () => {
    const left = [...running];
    for (const child of left) child.kill('SIGKILL');
    await Promise.all(left.map((child) => new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(undefined) : child.once('exit', resolve)))));
  });
}

export function start(bin: 'sft' | 'sft-relay', args: string[], env: Record<string, string> = {}): Running {
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', `${bin}.js`), ...args], {
    cwd: ROOT,
    env: { ...process.env, NO_COLOR: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stdout: string[] = [];
  const stderr: string[] = [];
  readline.createInterface({ input: child.stdout! }).on('line', (l) => stdout.push(l));
  readline.createInterface({ input: child.stderr! }).on('line', (l) => stderr.push(l));
  running.add(child);
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      running.delete(child);
      resolve(code);
    }),
  );
  return {
    child,
    stdout,
    stderr,
    exited,
    stop: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Runs a command to completion. */
export async function run(bin: 'sft' | 'sft-relay', args: string[], env: Record<string, string> = {}) {
  const p = start(bin, args, env);
  const code = await p.exited;
  // Let the line readers drain.
  await new Promise((r) => setImmediate(r));
  return { code, stdout: p.stdout.join('\n'), stderr: p.stderr.join('\n') };
}

export async function waitForLine(lines: string[], pattern: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const line of lines) {
      const m = pattern.exec(line);
      if (m) return m;
    }
    if (Date.now() > deadline) throw new Error(`no line matching ${pattern} in:\n${lines.join('\n')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Starts `sft-relay --port 0` and resolves with its URL once it prints it. */
export async function startRelayProcess(args: string[] = [], env: Record<string, string> = {}) {
  const relay = start('sft-relay', ['--port', '0', ...args], env);
  const [, url] = await waitForLine(relay.stdout, /^sft-relay listening on (\S+)$/);
  return { relay, url: url! };
}
