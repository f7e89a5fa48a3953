/**
 * Running the relay for a team, against real `sft-relay` processes: TLS, tokens and their
 * rotation, the allow-list, policy refusals, metrics, audit, configuration errors and draining.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Harness, sha256File, writeRandomFile, type Peer } from '../helpers/harness';
import { run, startRelayProcess, waitForLine } from '../helpers/processes';
import { sendFiles } from '../../extension/core/transfer/sender';
import { Identity } from '../../extension/core/crypto/identity';
import { io } from 'socket.io-client';

let work: string;
const cleanups: Array<() => Promise<unknown>> = [];
before(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-ops-'));
});
after(async () => {
  for (const c of cleanups.reverse()) await c();
  await fs.rm(work, { recursive: true, force: true });
});

async function relayProcess(args: string[], env: Record<string, string> = {}) {
  const started = await startRelayProcess(args, env);
  cleanups.push(() => started.relay.stop('SIGKILL'));
  const h = Harness.attach(started.url);
  cleanups.push(() => h.close());
  return { ...started, h };
}

async function offerFile(h: Harness, from: Peer, to: Peer, size: number, answer: 'accept' | 'decline' | 'ignore' = 'accept') {
  const src = await h.tempDir();
  const file = path.join(src, 'f.bin');
  const sum = await writeRandomFile(file, size, `${from.name}-${size}`);
  const out = await h.tempDir();
  const got =
    answer === 'ignore'
      ? Promise.resolve()
      : to.nextOffer().then(async (o) => {
          if (answer === 'accept') await o.accept({ directory: out });
          else o.decline();
        });
  const sent = await sendFiles(from.client, { paths: [file], to: [from.client.findPeer(to.name)], answerTimeoutMs: 3000 }).catch((error: unknown) => {
    to.inbox.removeAllListeners('offer'); // No offer will come; do not answer a later one.
    throw error;
  });
  await got;
  return { sent, sum, out };
}

test('TLS: a wss:// transfer with a generated certificate; a client without the CA cannot connect', async () => {
  const key = path.join(work, 'tls.key');
  const cert = path.join(work, 'tls.crt');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=sft-test-relay', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  const { url, h } = await relayProcess(['--tls-cert', cert, '--tls-key', key]);
  assert.match(url, /^https:\/\//);
  const ca = await fs.readFile(cert, 'utf8');
  await assert.rejects(h.peer('no-ca'), { code: 'RELAY_UNREACHABLE' });
  const a = await h.peer('tls-a', { ca });
  const b = await h.peer('tls-b', { ca });
  await h.until(() => a.client.peers.has(b.identity.peerId));
  const { sent, sum, out } = await offerFile(h, a, b, 3_000_000);
  assert.equal(sent.recipients[0]!.outcome, 'done');
  assert.equal(await sha256File(path.join(out, 'f.bin')), sum);
  const ids = path.join(work, 'tls-cli');
  const cli = await run('sft', ['peers', '--json', '--name', 'tls-cli', '--identity', ids, '--ca', cert], { SFT_RELAY: url });
  assert.equal(cli.code, 0, cli.stderr);
  assert.equal((JSON.parse(cli.stdout) as unknown[]).length, 2);
});

test('tokens rotate on SIGHUP without dropping connected clients; the old token stops admitting', async () => {
  const tokenFile = path.join(work, 'tokens');
  await fs.writeFile(tokenFile, 'old-token-1111\n', { mode: 0o600 });
  const { relay, h } = await relayProcess(['--token-file', tokenFile]);
  const early = await h.peer('early', { token: 'old-token-1111' });
  // A token file caught empty (being rewritten, or emptied by mistake) does not open the relay.
  await fs.writeFile(tokenFile, '# nothing yet\n');
  relay.child.kill('SIGHUP');
  await waitForLine(relay.stderr, /the token list is now empty; to run without tokens, restart the relay.*reload failed; keeping the previous settings/);
  await assert.rejects(h.peer('tokenless'), { code: 'UNAUTHORIZED' });
  await fs.writeFile(tokenFile, '# rotated\nnew-token-2222\n');
  relay.child.kill('SIGHUP');
  await waitForLine(relay.stderr, /reloaded tokens and allow-list/);
  await assert.rejects(h.peer('late-old', { token: 'old-token-1111' }), { code: 'UNAUTHORIZED' });
  const late = await h.peer('late-new', { token: 'new-token-2222' });
  assert.equal(early.client.state, 'connected', 'the connected client was not dropped');
  await h.until(() => early.client.peers.has(late.identity.peerId));
  const { sent } = await offerFile(h, early, late, 10_000);
  assert.equal(sent.recipients[0]!.outcome, 'done');
});

test('the allow-list admits listed peer ids only, and is reloaded when the file changes', async () => {
  const alice = Identity.generate();
  const bob = Identity.generate();
  const allowFile = path.join(work, 'allow');
  await fs.writeFile(allowFile, `${alice.peerId} # alice\n`);
  const { h } = await relayProcess(['--allow-list', allowFile]);
  const a = await h.peer('alice', { identity: alice });
  await assert.rejects(h.peer('bob', { identity: bob }), { code: 'NOT_ALLOWED' });
  await fs.writeFile(allowFile, `${alice.peerId}\n${bob.peerId}\n`);
  let b: Peer | undefined;
  for (let i = 0; i < 60 && !b; i++) {
    b = await h.peer('bob', { identity: bob }).catch(() => undefined);
    if (!b) await new Promise((r) => setTimeout(r, 250));
  }
  assert.ok(b, 'bob is admitted once the file lists him');
  await fs.writeFile(allowFile, `${bob.peerId}\n`);
  await h.until(() => a.client.state === 'disconnected', 15_000);
});

describe('policy refusals, each with its code', () => {
  let h: Harness;
  let alice: Peer, bob: Peer, carol: Peer, dave: Peer;
  before(async () => {
    const tokenFile = path.join(work, 'team-tokens');
    await fs.writeFile(tokenFile, 'red red-team-token\nblue blue-team-token\n');
    const config = path.join(work, 'policy.yaml');
    await fs.writeFile(
      config,
      ['tokenFile: ' + tokenFile, 'maxFileSize: 100kB', 'maxBytesPerClientPerHour: 300000', 'maxTransfers: 1', 'recipients: same-team', 'maxTransfersPerClient: 4', ''].join('\n'),
    );
    ({ h } = await relayProcess(['--config', config]));
    [alice, bob, carol, dave] = await Promise.all([
      h.peer('alice', { token: 'red-team-token' }),
      h.peer('bob', { token: 'red-team-token' }),
      h.peer('carol', { token: 'blue-team-token' }),
      h.peer('dave', { token: 'blue-team-token' }),
    ]);
    await h.until(() => [alice, bob, carol, dave].every((p) => p.client.peers.size === 3));
  });

  test('RECIPIENT_NOT_ALLOWED: only within the same team', async () => {
    await assert.rejects(offerFile(h, alice, carol, 10), { code: 'RECIPIENT_NOT_ALLOWED' });
  });

  test('FILE_TOO_LARGE: above the configured size', async () => {
    await assert.rejects(offerFile(h, alice, bob, 100_001), { code: 'FILE_TOO_LARGE' });
  });

  test('RELAY_BUSY: at the relay-wide limit of running transfers', async () => {
    const pending = offerFile(h, carol, dave, 10, 'ignore');
    await new Promise<void>((resolve) => dave.inbox.once('offer', () => resolve()));
    await assert.rejects(offerFile(h, alice, bob, 10), { code: 'RELAY_BUSY' });
    assert.equal((await pending).sent.recipients[0]!.outcome, 'failed');
  });

  test('QUOTA_EXCEEDED: bytes per client per hour', async () => {
    for (let i = 0; i < 3; i++) assert.equal((await offerFile(h, bob, alice, 90_000)).sent.recipients[0]!.outcome, 'done');
    await assert.rejects(offerFile(h, bob, alice, 90_000), { code: 'QUOTA_EXCEEDED' });
    // Alice's budget is her own.
    assert.equal((await offerFile(h, alice, bob, 90_000)).sent.recipients[0]!.outcome, 'done');
  });
});

test('TOO_MANY_TRANSFERS: concurrent transfers per client, from a relay process', async () => {
  const { h } = await relayProcess(['--max-transfers-per-client', '1']);
  const [sender, receiver] = await Promise.all([h.peer('busy-sender'), h.peer('busy-receiver')]);
  await h.until(() => sender.client.peers.has(receiver.identity.peerId));
  const pending = offerFile(h, sender, receiver, 10, 'ignore');
  await new Promise<void>((resolve) => receiver.inbox.once('offer', () => resolve()));
  await assert.rejects(offerFile(h, sender, receiver, 10), { code: 'TOO_MANY_TRANSFERS' });
  assert.equal((await pending).sent.recipients[0]!.outcome, 'failed');
});

test('/metrics (on its own port) counts a transfer, refusals and event-loop lag; /readyz answers', async () => {
  const { url, h, relay } = await relayProcess(['--metrics-port', '0'], { SFT_RELAY_TOKEN: 'metrics-token' });
  const [, metricsUrl] = await waitForLine(relay.stderr, /"metrics":"([^"]+)"/);
  assert.notEqual(new URL(metricsUrl!).port, new URL(url).port);
  assert.equal((await fetch(`${url}/metrics`)).status, 404, 'not on the public port');
  assert.equal((await fetch(`${url}/readyz`)).status, 200);
  await assert.rejects(h.peer('intruder', { token: 'wrong' }), { code: 'UNAUTHORIZED' });
  const a = await h.peer('m-a', { token: 'metrics-token' });
  const b = await h.peer('m-b', { token: 'metrics-token' });
  await h.until(() => a.client.peers.has(b.identity.peerId));
  const { sent } = await offerFile(h, a, b, 1_000_000);
  const text = await (await fetch(metricsUrl!)).text();
  const value = (series: string) => {
    const line = text.split('\n').find((l) => l.startsWith(series + ' '));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };
  assert.equal(value('sft_relay_transfers_total{outcome="complete"}'), 1);
  assert.equal(value('sft_relay_bytes_relayed_total'), sent.cipherBytes);
  assert.equal(value('sft_relay_offers_total'), 1);
  assert.equal(value('sft_relay_refusals_total{code="UNAUTHORIZED"}'), 1);
  assert.equal(value('sft_relay_joined_peers'), 2);
  assert.ok(value('sft_relay_connected_clients')! >= 2);
  assert.ok(value('nodejs_eventloop_lag_seconds')! >= 0);
});

test('configuration errors name the bad key, and the effective configuration is logged without secrets', async () => {
  const bad = path.join(work, 'bad.yaml');
  await fs.writeFile(bad, 'maxFileSise: 10GB\nport: seventy\n');
  const result = await run('sft-relay', ['--config', bad]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /unknown key "maxFileSise"/);
  assert.match(result.stderr, /port: /);
  const badSize = await run('sft-relay', ['--max-file-size', 'huge']);
  assert.equal(badSize.code, 2);
  assert.match(badSize.stderr, /maxFileSize: expected a size/);
  // Bad flags are bad settings too (Commander alone would exit 1, and systemd would restart it).
  for (const args of [['--max-fle-size', '1GB'], ['--port'], ['extra-argument']]) {
    const result = await run('sft-relay', args);
    assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, /^error: /m);
  }
  const negative = await run('sft-relay', ['--port', '-1']);
  assert.equal(negative.code, 2);
  assert.match(negative.stderr, /port: Too small: expected number to be >=0/);
  const zero = await run('sft-relay', ['--max-file-size', '0']);
  assert.equal(zero.code, 2);
  assert.match(zero.stderr, /maxFileSize: must be more than 0 \(leave it unset for no limit\)/);
  // A budget equal to the largest file cannot carry it: the ciphertext is 16 bytes per MiB larger.
  const tight = await run('sft-relay', ['--max-file-size', '1GiB', '--max-bytes-per-client-per-hour', '1GiB']);
  assert.equal(tight.code, 2);
  assert.match(tight.stderr, /maxBytesPerClientPerHour: must be at least maxFileSize plus its encryption overhead/);
  const auditPath = path.join(work, 'no-such-folder', 'audit.jsonl');
  const noAudit = await run('sft-relay', ['--audit-log', auditPath]);
  assert.equal(noAudit.code, 2);
  assert.ok(noAudit.stderr.includes(`auditLog: cannot write ${auditPath} (ENOENT)`), noAudit.stderr);

  const good = path.join(work, 'good.json');
  await fs.writeFile(good, JSON.stringify({ maxFileSize: '1GB', recipients: 'same-team', port: 1 }));
  // The flag beats the file (port), the environment beats the file (max file size).
  const { relay } = await relayProcess(['--config', good, '--port', '0'], { SFT_RELAY_TOKEN: 'very-secret-token', SFT_RELAY_MAX_FILE_SIZE: '2GB' });
  const [, line] = await waitForLine(relay.stderr, /^(\{.*"msg":"effective configuration".*\})$/);
  const logged = JSON.parse(line!) as { config: Record<string, unknown> };
  assert.equal(logged.config.maxFileSize, 2e9);
  assert.equal(logged.config.recipients, 'same-team');
  assert.equal(logged.config.token, '[redacted]');
  assert.equal(relay.stderr.join('\n').includes('very-secret-token'), false);

  // A misspelt variable is named, not ignored; a relay with no token says that anyone may join.
  const { relay: open } = await relayProcess(['--port', '0'], { SFT_RELAY_TOKENS: 'meant-as-a-token' });
  await waitForLine(open.stderr, /no team token is set: this relay admits anyone who can reach it/);
  assert.match(open.stderr.join('\n'), /warning: SFT_RELAY_TOKENS is not a setting of sft-relay and is ignored/);
  assert.equal(open.stderr.join('\n').includes('meant-as-a-token'), false);
  // Listening beyond this machine without publicUrl: join proofs are bound only to the Host header.
  // (Bound to every interface, but only ever spoken to on loopback.)
  const { relay: wide } = await relayProcess(['--host', '0.0.0.0'], { SFT_RELAY_TOKEN: 'a-token-for-the-wide-relay' });
  await waitForLine(wide.stderr, /publicUrl is not set: join proofs are bound only to the Host header/);
});

test('graceful shutdown: a running transfer finishes, new clients are turned away, then the relay exits 0', async () => {
  const auditLog = path.join(work, 'drain-audit.jsonl');
  const { relay, url, h } = await relayProcess(['--shutdown-grace', '60', '--audit-log', auditLog]);
  const a = await h.peer('drain-a');
  const b = await h.peer('drain-b');
  await h.until(() => a.client.peers.has(b.identity.peerId));
  const src = await h.tempDir();
  const out = await h.tempDir();
  const file = path.join(src, 'big.bin');
  const sum = await writeRandomFile(file, 150 * 1024 * 1024, 'drain');
  const notices: string[] = [];
  a.client.on('notice', (n) => notices.push(n.code));
  const received = b.nextOffer().then((o) => o.accept({ directory: out }));
  let signalled = false;
  const sent = sendFiles(a.client, {
    paths: [file],
    to: [a.client.findPeer('drain-b')],
    onProgress: (p) => {
      if (!signalled && p.bytes > 10 * 1024 * 1024) {
        signalled = true;
        relay.child.kill('SIGTERM');
      }
    },
  });
  await waitForLine(relay.stderr, /draining/);
  assert.equal((await fetch(`${url}/readyz`)).status, 503);
  await assert.rejects(h.peer('too-late'), { code: 'SHUTTING_DOWN' });
  assert.equal((await sent).recipients[0]!.outcome, 'done');
  await received;
  assert.equal(await sha256File(path.join(out, 'big.bin')), sum);
  assert.equal(await relay.exited, 0);
  assert.ok(notices.includes('SHUTTING_DOWN'), 'clients were told why');

  // The audit trail of the relay process: one parsable line per event, ids and sizes, no names.
  const text = await fs.readFile(auditLog, 'utf8');
  const lines = text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const events = lines.map((l) => l.event);
  for (const event of ['join', 'offer', 'accept', 'complete', 'refused']) assert.ok(events.includes(event), `${event} is recorded`);
  const complete = lines.find((l) => l.event === 'complete')!;
  assert.equal(complete.from, a.identity.peerId);
  assert.equal(complete.to, b.identity.peerId);
  assert.equal(typeof complete.cipherBytes, 'number');
  assert.equal(typeof complete.durationMs, 'number');
  assert.equal(lines.find((l) => l.event === 'refused')!.code, 'SHUTTING_DOWN');
  assert.equal(text.includes('big.bin'), false, 'no file names in the audit trail');
});

test('behind a proxy (trustProxy), per-address limits and the audit log use the forwarded client address', async () => {
  const auditLog = path.join(work, 'proxy-audit.jsonl');
  const { url } = await relayProcess(['--trust-proxy', 'true', '--audit-log', auditLog]);
  const connectAs = (address: string) =>
    new Promise<string | undefined>((resolve) => {
      const socket = io(url, { path: '/sft/socket.io', transports: ['websocket'], reconnection: false, forceNew: true, auth: { v: 1 }, extraHeaders: { 'x-forwarded-for': `198.51.100.7, ${address}` } });
      socket.once('challenge', () => (socket.disconnect(), resolve(undefined)));
      socket.once('connect_error', (e: Error & { data?: { code: string } }) => (socket.disconnect(), resolve(e.data?.code)));
    });
  // The join limit allows a burst of 30 per address, refilled at 5 a second: the first 30 from one
  // address pass, and one of the next few is refused (a slow machine may refill a token or two
  // while the 30 connect)...
  const codes = [];
  for (let i = 0; i < 30; i++) codes.push(await connectAs('203.0.113.10'));
  assert.deepEqual(codes.filter((c) => c !== undefined), []);
  let refusedAt = 0;
  while (refusedAt < 10 && (await connectAs('203.0.113.10')) !== 'JOIN_RATE_LIMITED') refusedAt += 1;
  assert.ok(refusedAt < 10, 'the address was refused once its burst was used');
  // ...while another client behind the same proxy is not.
  assert.equal(await connectAs('203.0.113.11'), undefined);
  await new Promise((r) => setTimeout(r, 200));
  const refused = (await fs.readFile(auditLog, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { address?: string });
  assert.deepEqual(refused.map((r) => r.address), ['203.0.113.10']);
});
