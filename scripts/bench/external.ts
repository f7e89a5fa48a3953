/**
 * The tools the goals compare against, run on loopback when they are installed:
 *
 *   wormhole  magic-wormhole through its own transit relay: a mailbox server and a transit relay
 *             (twistd3), `wormhole send` and `wormhole receive`, both with --no-listen, so no direct
 *             connection is offered and every byte goes through the transit relay.
 *   scp       `scp -J`: OpenSSH through a jump host. Two sshd processes on loopback ports with a
 *             throwaway host key and user key: the jump host (the "relay": it forwards the
 *             encrypted stream, decrypting and re-encrypting its own hop) and the destination (the
 *             "receiver": its per-connection sshd and SFTP server write the file). The sender is
 *             scp with its ssh and the `ssh -W` that reaches through the jump host. Cipher
 *             aes128-gcm@openssh.com on both hops.
 *
 * These are not Node programs: their CPU and memory come from /proc (procfs.ts).
 * Debian: apt-get install magic-wormhole python3-magic-wormhole-mailbox-server
 * magic-wormhole-transit-relay openssh-server.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { freePort } from '../free-port';
import { TreeSampler, readStat, totalCpu, treeOf } from './procfs';

export interface ProcessFigures {
  cpuSeconds: number;
  maxRssBytes: number;
}

export interface ExternalRun {
  seconds: number;
  processes: Record<string, ProcessFigures>;
}

const onPath = (command: string) => spawnSync('sh', ['-c', `command -v ${command}`]).status === 0;

/** Why the path cannot run here, or undefined when it can. */
export function wormholeMissing(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux (the figures come from /proc)';
  for (const [command, pkg] of [
    ['wormhole', 'magic-wormhole'],
    ['twistd3', 'python3-twisted'],
  ]) {
    if (!onPath(command!)) return `${command} not found (apt-get install ${pkg})`;
  }
  // The twistd plugins of the two servers.
  const plugins = spawnSync('twistd3', ['--help'], { encoding: 'utf8' }).stdout ?? '';
  if (!plugins.includes('wormhole-mailbox')) return 'the wormhole mailbox server is missing (apt-get install python3-magic-wormhole-mailbox-server)';
  if (!plugins.includes('transitrelay')) return 'the wormhole transit relay is missing (apt-get install magic-wormhole-transit-relay)';
  return undefined;
}

export function scpMissing(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux (the figures come from /proc)';
  if (process.getuid?.() !== 0) return 'not root (the benchmark runs sshd and logs in as root with a throwaway key)';
  if (!onPath('scp') || !onPath('ssh-keygen')) return 'scp not found (apt-get install openssh-client)';
  if (spawnSync('/usr/sbin/sshd', ['-V']).error) return '/usr/sbin/sshd not found (apt-get install openssh-server)';
  return undefined;
}

interface Daemon {
  child: ChildProcess;
  lines: string[];
  exited: Promise<void>;
}

/** A server in a process group of its own, so that stopping it stops everything it started. */
function daemon(command: string, args: string[], cwd: string): Daemon {
  const child = spawn(command, args, { cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  for (const s of [child.stdout!, child.stderr!]) s.setEncoding('utf8').on('data', (d: string) => lines.push(...d.split('\n')));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return { child, lines, exited };
}

async function stopDaemon(d: Daemon): Promise<void> {
  if (d.child.exitCode !== null || d.child.signalCode !== null || d.child.pid === undefined) return;
  try {
    process.kill(-d.child.pid, 'SIGTERM');
  } catch {
    // Already gone.
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-d.child.pid!, 'SIGKILL');
    } catch {
      // Gone.
    }
  }, 5000);
  await d.exited;
  clearTimeout(timer);
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, lines: () => string[], timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}:\n${lines().slice(-15).join('\n')}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

interface Client {
  child: ChildProcess;
  lines: string[];
  exited: Promise<number | null>;
  statFile: string;
}

/**
 * A client command under a shell that, once the command (and whatever it waited for) has exited,
 * writes its own /proc stat: cutime + cstime are then the command tree's exact CPU time.
 */
function client(work: string, label: string, command: string, args: string[], timeoutMs: number): Client {
  const statFile = path.join(work, `${label}-${process.hrtime.bigint()}.stat`);
  const child = spawn('sh', ['-c', 'f=$1; shift; "$@"; rc=$?; cat /proc/$$/stat > "$f"; exit $rc', 'sh', statFile, command, ...args], {
    cwd: work,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  for (const s of [child.stdout!, child.stderr!]) s.setEncoding('utf8').on('data', (d: string) => lines.push(...d.split(/[\r\n]/)));
  const timer = setTimeout(() => {
    lines.push(`(killed after ${timeoutMs / 1000} s)`);
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // Gone.
    }
  }, timeoutMs);
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    }),
  );
  return { child, lines, exited, statFile };
}

/** Ends a client's process group if it is still running (after a failure). */
function stopClient(c: Client | undefined): void {
  if (!c || c.child.exitCode !== null || c.child.signalCode !== null) return;
  try {
    process.kill(-c.child.pid!, 'SIGKILL');
  } catch {
    // Gone.
  }
}

async function clientCpu(c: Client): Promise<number | undefined> {
  try {
    const text = await fs.readFile(c.statFile, 'utf8');
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / 100;
  } catch {
    return undefined;
  }
}

async function finished(named: Record<string, Client>): Promise<void> {
  for (const [name, c] of Object.entries(named)) {
    const code = await c.exited;
    if (code !== 0) throw new Error(`${name} exited with ${code}:\n${c.lines.filter(Boolean).slice(-10).join('\n')}`);
  }
}

/** Budget for one transfer: generous for a slow machine, but bounded. */
const timeoutFor = (bytes: number) => 120_000 + (bytes / 2 ** 20) * 1000;

export async function runWormhole(work: string, file: string, out: string): Promise<ExternalRun> {
  const dir = await fs.mkdtemp(path.join(work, 'wormhole-'));
  const [mailboxPort, transitPort] = [await freePort(), await freePort()];
  const mailbox = daemon('twistd3', ['-n', '--pidfile=', 'wormhole-mailbox', `--port=tcp:${mailboxPort}:interface=127.0.0.1`, `--channel-db=${path.join(dir, 'channels.sqlite')}`], dir);
  const transit = daemon('twistd3', ['-n', '--pidfile=', 'transitrelay', `--port=tcp:${transitPort}:interface=127.0.0.1`], dir);
  let sender: Client | undefined;
  let receiver: Client | undefined;
  try {
    await waitFor('the wormhole mailbox server', () => portOpen(mailboxPort), () => mailbox.lines);
    await waitFor('the wormhole transit relay', () => portOpen(transitPort), () => transit.lines);
    const common = ['--relay-url', `ws://127.0.0.1:${mailboxPort}/v1`, '--transit-helper', `tcp:127.0.0.1:${transitPort}`];
    const code = `7-bench-${process.hrtime.bigint()}`;
    const size = (await fs.stat(file)).size;
    const sampler = new TreeSampler({ relay: transit.child.pid!, mailbox: mailbox.child.pid! });
    // The receiver waits on the mailbox first, as sft's receiver waits on the relay.
    receiver = client(work, 'wormhole-receiver', 'wormhole', [...common, 'receive', '--no-listen', '--accept-file', '-o', out, code], timeoutFor(size));
    sampler.add('receiver', receiver.child.pid!);
    await new Promise((r) => setTimeout(r, 1500));
    const t0 = performance.now();
    sender = client(work, 'wormhole-sender', 'wormhole', [...common, 'send', '--no-listen', '--code', code, file], timeoutFor(size));
    sampler.add('sender', sender.child.pid!);
    await finished({ sender, receiver });
    const seconds = (performance.now() - t0) / 1000;
    // wormhole names the path it took: "Sending (->relay:tcp:…)" when through the transit relay.
    if (!sender.lines.some((l) => l.includes('->relay:'))) throw new Error(`wormhole did not go through the transit relay:\n${sender.lines.join('\n')}`);
    const processes = sampler.stop({
      relay: totalCpu(transit.child.pid!),
      mailbox: totalCpu(mailbox.child.pid!),
      sender: await clientCpu(sender),
      receiver: await clientCpu(receiver),
    });
    return { seconds, processes };
  } finally {
    stopClient(sender);
    stopClient(receiver);
    await Promise.all([stopDaemon(mailbox), stopDaemon(transit)]);
  }
}

export interface Ssh {
  dir: string;
  config: string;
}

/** A throwaway host key, user key, sshd configuration and ssh client configuration. */
export async function prepareSsh(work: string): Promise<Ssh> {
  const dir = await fs.mkdtemp(path.join(work, 'ssh-'));
  for (const key of ['host', 'user']) {
    const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `sft-bench-${key}`, '-f', path.join(dir, key)], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
  }
  await fs.copyFile(path.join(dir, 'user.pub'), path.join(dir, 'authorized_keys'));
  await fs.chmod(path.join(dir, 'authorized_keys'), 0o600);
  await fs.writeFile(
    path.join(dir, 'sshd_config'),
    [
      'ListenAddress 127.0.0.1',
      `HostKey ${path.join(dir, 'host')}`,
      // Root, by this one throwaway key only.
      'PermitRootLogin prohibit-password',
      `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'PidFile none',
      'AllowTcpForwarding yes',
      'Subsystem sftp internal-sftp',
      'Ciphers aes128-gcm@openssh.com',
      'LogLevel ERROR',
      '',
    ].join('\n'),
  );
  const config = path.join(dir, 'ssh_config');
  await fs.writeFile(
    config,
    [
      // -F reaches the `ssh -W` that -J starts, so the jump hop gets the same settings.
      'Host 127.0.0.1',
      '  User root',
      `  IdentityFile ${path.join(dir, 'user')}`,
      '  IdentitiesOnly yes',
      '  StrictHostKeyChecking no',
      '  UserKnownHostsFile /dev/null',
      '  Ciphers aes128-gcm@openssh.com',
      '  BatchMode yes',
      '  LogLevel ERROR',
      '',
    ].join('\n'),
  );
  // sshd's privilege separation directory (Debian creates it at boot, containers may lack it).
  await fs.mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  return { dir, config };
}

/** Waits until a server has reaped every per-connection child (bounded). */
async function settled(pid: number): Promise<void> {
  for (let i = 0; i < 200 && treeOf(pid).length > 1; i++) await new Promise((r) => setTimeout(r, 25));
}

export async function runScp(work: string, ssh: Ssh, file: string, out: string): Promise<ExternalRun> {
  const [jumpPort, destPort] = [await freePort(), await freePort()];
  const sshdConfig = path.join(ssh.dir, 'sshd_config');
  const jump = daemon('/usr/sbin/sshd', ['-D', '-e', '-f', sshdConfig, '-p', String(jumpPort)], ssh.dir);
  const dest = daemon('/usr/sbin/sshd', ['-D', '-e', '-f', sshdConfig, '-p', String(destPort)], ssh.dir);
  let sender: Client | undefined;
  try {
    await waitFor('the jump sshd', () => portOpen(jumpPort), () => jump.lines);
    await waitFor('the destination sshd', () => portOpen(destPort), () => dest.lines);
    // The port probes above opened connections: let sshd finish with them before the baseline.
    await Promise.all([settled(jump.child.pid!), settled(dest.child.pid!)]);
    const size = (await fs.stat(file)).size;
    const sampler = new TreeSampler({ relay: jump.child.pid!, receiver: dest.child.pid! });
    const t0 = performance.now();
    sender = client(work, 'scp', 'scp', ['-q', '-F', ssh.config, '-J', `root@127.0.0.1:${jumpPort}`, '-P', String(destPort), file, `root@127.0.0.1:${out}`], timeoutFor(size));
    sampler.add('sender', sender.child.pid!);
    await finished({ sender });
    const seconds = (performance.now() - t0) / 1000;
    await Promise.all([settled(jump.child.pid!), settled(dest.child.pid!)]);
    const processes = sampler.stop({ relay: totalCpu(jump.child.pid!), receiver: totalCpu(dest.child.pid!), sender: await clientCpu(sender) });
    if (readStat(jump.child.pid!) === undefined) throw new Error('the jump sshd died');
    return { seconds, processes };
  } finally {
    stopClient(sender);
    await Promise.all([stopDaemon(jump), stopDaemon(dest)]);
  }
}
