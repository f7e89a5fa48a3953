/**
 * The command-line client and the relay as real processes: `sft-relay` on port 0, `sft` senders
 * and receivers with their own identity folders, real files, and the exit codes scripts rely on.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run, start, startRelayProcess, waitForLine, type Running } from '../helpers/processes';
import { listTree, sha256File, writeRandomFile } from '../helpers/harness';
import { EXIT_CODES } from '../../extension/cli/exit-codes';
import { PROTOCOL_VERSION } from '../../extension/core/protocol';

const TOKEN = 'team-token-for-cli-tests';
let work: string;
let relay: Running;
let env: Record<string, string>;

const as = (name: string) => ['--name', name, '--identity', path.join(work, `id-${name}`)];

before(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-cli-'));
  const started = await startRelayProcess(['--audit-log', path.join(work, 'audit.jsonl')], { SFT_RELAY_TOKEN: TOKEN });
  relay = started.relay;
  // The token travels in the environment, never in argv.
  env = { SFT_RELAY: started.url, SFT_TOKEN: TOKEN };
});

after(async () => {
  await relay.stop();
  await fs.rm(work, { recursive: true, force: true });
});

test('sft id creates a private identity file and prints the peer id and fingerprint', async () => {
  const result = await run('sft', ['id', '--identity', path.join(work, 'id-ida')], env);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /^peer id: +[a-z2-7]{26}$/m);
  assert.match(result.stdout, /^fingerprint: +(\d{5} ){5}\d{5}$/m);
  const file = path.join(work, 'id-ida', 'identity.json');
  if (process.platform !== 'win32') assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
  const again = await run('sft', ['id', '--identity', path.join(work, 'id-ida')], env);
  assert.equal(again.stdout, result.stdout, 'the identity is stable across runs');
  assert.equal(result.stdout.includes(JSON.parse(await fs.readFile(file, 'utf8'))['sft.identity.v1']), false);
  const json = await run('sft', ['id', '--json', '--identity', path.join(work, 'id-ida')], env);
  const { peerId, fingerprint: printed } = JSON.parse(json.stdout) as { peerId: string; fingerprint: string };
  assert.ok(result.stdout.includes(peerId) && result.stdout.includes(printed), 'the same identity, as JSON');
});

test('sft --version and sft-relay --version print the package version and the protocol version', async () => {
  const { version } = JSON.parse(await fs.readFile(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
  for (const program of ['sft', 'sft-relay'] as const) {
    const result = await run(program, ['--version']);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), `${version} (protocol ${PROTOCOL_VERSION})`, program);
  }
});

test('sft send and sft receive move files and a folder between processes', async () => {
  const src = path.join(work, 'src');
  const out = path.join(work, 'received');
  const bigSum = await writeRandomFile(path.join(src, 'video.bin'), 20 * 1024 * 1024 + 3, 'cli');
  await writeRandomFile(path.join(src, 'docs', 'a.txt'), 100, 'a');
  await writeRandomFile(path.join(src, 'docs', 'sub', 'b.txt'), 0, 'b');
  const receiver = start('sft', ['receive', '--out', out, '--yes', '--once', '--json', ...as('bob')], env);
  await waitForLine(receiver.stderr, /Waiting for files/);
  const peers = await run('sft', ['peers', '--json', ...as('alice')], env);
  assert.equal(peers.code, 0, peers.stderr);
  assert.deepEqual((JSON.parse(peers.stdout) as Array<{ name: string }>).map((p) => p.name), ['bob']);

  const sent = await run('sft', ['send', path.join(src, 'video.bin'), path.join(src, 'docs'), '--to', 'bob', ...as('alice')], env);
  assert.equal(sent.code, EXIT_CODES.ok, `${sent.stderr}\n--- receiver:\n${receiver.stderr.join('\n')}`);
  assert.match(sent.stdout, /Delivered to bob: 3 file\(s\)/);
  assert.equal(await receiver.exited, EXIT_CODES.ok, receiver.stderr.join('\n'));
  // --json: one line for the transfer, naming its sender and where each file went.
  assert.equal(receiver.stdout.length, 1, receiver.stdout.join('\n'));
  const got = JSON.parse(receiver.stdout[0]!) as { from: { name: string }; files: Array<{ receivedPath: string; savedAs: string; size: number }> };
  assert.equal(got.from.name, 'alice');
  assert.deepEqual(got.files.map((f) => [f.receivedPath, path.relative(out, f.savedAs), f.size]).sort(), [['docs/a.txt', path.join('docs', 'a.txt'), 100], ['docs/sub/b.txt', path.join('docs', 'sub', 'b.txt'), 0], ['video.bin', 'video.bin', 20 * 1024 * 1024 + 3]]);
  assert.match(receiver.stderr.join('\n'), /alice \([a-z2-7]{8}, not verified\) wants to send 3 file\(s\)/);
  assert.deepEqual(await listTree(out), ['docs/', 'docs/a.txt', 'docs/sub/', 'docs/sub/b.txt', 'video.bin']);
  assert.equal(await sha256File(path.join(out, 'video.bin')), bigSum);
});

test('exit codes: unknown recipient, missing token, declined offer, missing file', async () => {
  const src = path.join(work, 'codes');
  await writeRandomFile(path.join(src, 'f.bin'), 10);
  const nobody = await run('sft', ['send', path.join(src, 'f.bin'), '--to', 'nobody', ...as('carol')], env);
  assert.equal(nobody.code, EXIT_CODES.peer, nobody.stderr);
  assert.match(nobody.stderr, /PEER_OFFLINE/);

  const noToken = await run('sft', ['peers', ...as('carol')], { SFT_RELAY: env.SFT_RELAY! });
  assert.equal(noToken.code, EXIT_CODES.refused);
  assert.match(noToken.stderr, /valid team token\. \(UNAUTHORIZED\)/);

  // A receiver that is not a terminal and has no --yes declines.
  const decliner = start('sft', ['receive', '--out', path.join(work, 'declined'), '--once', ...as('dave')], env);
  await waitForLine(decliner.stderr, /Waiting for files/);
  const declined = await run('sft', ['send', path.join(src, 'f.bin'), '--to', 'dave', ...as('carol')], env);
  assert.equal(declined.code, EXIT_CODES.declined, declined.stderr);
  assert.equal(await decliner.exited, EXIT_CODES.declined);

  const missing = await run('sft', ['send', path.join(src, 'nope.bin'), '--to', 'carol', ...as('erin')], env);
  assert.equal(missing.code, EXIT_CODES.io, missing.stderr);
  assert.match(missing.stderr, /nope\.bin does not exist\. \(IO\)/);
});

test('usage errors exit 2; an unreadable --token-file names itself and exits 7; resume with nothing to resume needs no relay', async () => {
  for (const args of [['send', 'f.bin'], ['send', 'f.bin', '--to'], ['receive'], ['bogus'], ['id', '--relay', env.SFT_RELAY!]]) {
    const result = await run('sft', args, env);
    assert.equal(result.code, EXIT_CODES.usage, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, /^error: /m, args.join(' '));
  }
  assert.equal((await run('sft', ['--help'], env)).code, EXIT_CODES.ok);
  const usageJson = await run('sft', ['send', 'f.bin', '--json'], env);
  assert.equal(usageJson.code, EXIT_CODES.usage);
  assert.deepEqual(JSON.parse(usageJson.stdout), { error: { code: 'USAGE', message: "required option '--to <peers>' not specified" } });
  const tokenFile = path.join(work, 'no-such-token');
  const noFile = await run('sft', ['peers', '--token-file', tokenFile, ...as('ivy')], { SFT_RELAY: env.SFT_RELAY! });
  assert.equal(noFile.code, EXIT_CODES.io, noFile.stderr);
  assert.ok(noFile.stderr.includes(`Could not read --token-file ${tokenFile}: it does not exist`), noFile.stderr);
  // No relay listens on port 9 of loopback; with no journal, resume does not try to reach one.
  const nothing = await run('sft', ['resume', ...as('ivy')], { SFT_RELAY: 'http://127.0.0.1:9' });
  assert.equal(nothing.code, EXIT_CODES.ok, nothing.stderr);
  assert.match(nothing.stderr, /No interrupted transfers to resume/);
  // A name two online peers share is the user's to settle, with a peer id: USAGE, exit 2.
  const twins = [1, 2].map((n) => start('sft', ['receive', '--out', path.join(work, `twin-${n}`), '--name', 'twin', '--identity', path.join(work, `id-twin-${n}`)], env));
  await Promise.all(twins.map((t) => waitForLine(t.stderr, /Waiting for files/)));
  await writeRandomFile(path.join(work, 'for-twin.bin'), 10);
  const ambiguous = await run('sft', ['send', path.join(work, 'for-twin.bin'), '--to', 'twin', ...as('ivy')], env);
  await Promise.all(twins.map((t) => t.stop()));
  assert.equal(ambiguous.code, EXIT_CODES.usage, ambiguous.stderr);
  assert.match(ambiguous.stderr, /"twin" matches 2 online peers; use a peer id\. \(USAGE\)/);
  // With --json, a failure is JSON on stdout as well.
  const unreachable = await run('sft', ['peers', '--json', ...as('ivy')], { SFT_RELAY: 'http://127.0.0.1:9' });
  assert.equal(unreachable.code, EXIT_CODES.network, unreachable.stderr);
  assert.equal((JSON.parse(unreachable.stdout) as { error: { code: string } }).error.code, 'RELAY_UNREACHABLE');
});

test('sft verify shows the same safety number on both sides and records the verification', async () => {
  // One connection per identity: each side's verify runs while the other side is online.
  const grace = start('sft', ['receive', '--out', path.join(work, 'v-grace'), ...as('grace')], env);
  await waitForLine(grace.stderr, /Waiting for files/);
  const fromFrank = await run('sft', ['verify', 'grace', '--yes', '--json', ...as('frank')], env);
  const frank = start('sft', ['receive', '--out', path.join(work, 'v-frank'), ...as('frank')], env);
  await waitForLine(frank.stderr, /Waiting for files/);
  const fromGrace = await run('sft', ['verify', 'frank', ...as('grace')], env);
  await Promise.all([grace.stop(), frank.stop()]);
  const number = (s: string) => /^ {2}((?:\d{5} ){11}\d{5})$/m.exec(s)?.[1];
  // --json: the outcome on stdout, the prose on stderr.
  const outcome = JSON.parse(fromFrank.stdout) as { name: string; safetyNumber: string; verified: boolean };
  assert.ok(number(fromGrace.stdout));
  assert.deepEqual([outcome.name, outcome.safetyNumber, outcome.verified], ['grace', number(fromGrace.stdout), true]);
  assert.equal(number(fromFrank.stderr), outcome.safetyNumber);
  assert.match(fromFrank.stderr, /Marked grace as verified/);
  assert.match(fromGrace.stderr, /Not marked as verified: there is no terminal to ask on/, 'without a terminal or --yes, nothing is marked');
  assert.equal(fromGrace.code, EXIT_CODES.usage);
  const trust = JSON.parse(await fs.readFile(path.join(work, 'id-frank', 'trust.json'), 'utf8')) as { peers: Record<string, { verifiedAt?: string }> };
  assert.equal(Object.values(trust.peers).filter((p) => p.verifiedAt).length, 1);
});

test('the relay process logs no secrets and shuts down cleanly on SIGTERM', async () => {
  const { relay: r, url } = await startRelayProcess([], { SFT_RELAY_TOKEN: 'another-secret-token' });
  const health = await fetch(`${url}/healthz`);
  assert.equal(health.status, 200);
  const code = await r.stop('SIGTERM');
  assert.equal(code, 0);
  assert.equal([...r.stdout, ...r.stderr].join('\n').includes('another-secret-token'), false);
});

test('a verified name that comes back with another key is flagged loudly and needs an explicit yes both ways', async () => {
  // Frank verified grace in the test above; now someone else appears as "grace".
  const impostor = ['--name', 'grace', '--identity', path.join(work, 'id-grace-impostor')];
  const src = path.join(work, 'tofu');
  await writeRandomFile(path.join(src, 'note.txt'), 50);
  const receiving = start('sft', ['receive', '--out', path.join(work, 'tofu-impostor'), '--yes', '--once', ...impostor], env);
  await waitForLine(receiving.stderr, /Waiting for files/);

  const peers = await run('sft', ['peers', ...as('frank')], env);
  assert.match(peers.stdout, /grace \([a-z2-7]{8}, KEY CHANGED: verify again\)/);
  const refused = await run('sft', ['send', path.join(src, 'note.txt'), '--to', 'grace', ...as('frank')], env);
  assert.equal(refused.code, EXIT_CODES.security, refused.stderr);
  assert.match(refused.stderr, /WARNING: KEY CHANGED/);
  const forced = await run('sft', ['send', path.join(src, 'note.txt'), '--to', 'grace', '--trust-changed-key', ...as('frank')], env);
  assert.equal(forced.code, EXIT_CODES.ok, forced.stderr);
  assert.equal(await receiving.exited, EXIT_CODES.ok);

  // The other way: frank's --yes does not accept from the changed key.
  const frankReceiving = start('sft', ['receive', '--out', path.join(work, 'tofu-frank'), '--yes', '--once', ...as('frank')], env);
  await waitForLine(frankReceiving.stderr, /Waiting for files/);
  const fromImpostor = await run('sft', ['send', path.join(src, 'note.txt'), '--to', 'frank', ...impostor], env);
  assert.equal(fromImpostor.code, EXIT_CODES.declined);
  assert.equal(await frankReceiving.exited, EXIT_CODES.security);
  assert.match(frankReceiving.stderr.join('\n'), /WARNING: KEY CHANGED/);
  await assert.rejects(fs.readdir(path.join(work, 'tofu-frank')), { code: 'ENOENT' });
});

test('a name only seen (never verified) that comes back with another key is KEY CHANGED too: pinned on first contact', async (t) => {
  // lee meets kim once, without verifying.
  const kim = start('sft', ['receive', '--out', path.join(work, 'pin-kim'), ...as('kim')], env);
  try {
    await waitForLine(kim.stderr, /Waiting for files/, 30_000);
    const met = await run('sft', ['peers', ...as('lee')], env);
    assert.match(met.stdout, /kim \([a-z2-7]{8}, not verified\)/);
  } finally {
    // Stopped whatever happens: a kim left online would take the name in the tests after this one.
    await kim.stop();
  }
  // Someone else now uses the name (in another case: names fold like file names).
  const impostor = ['--name', 'KIM', '--identity', path.join(work, 'id-kim-impostor')];
  const receiving = start('sft', ['receive', '--out', path.join(work, 'pin-impostor'), '--yes', '--once', ...impostor], env);
  t.after(() => receiving.stop());
  await waitForLine(receiving.stderr, /Waiting for files/, 30_000);
  const peers = await run('sft', ['peers', ...as('lee')], env);
  assert.match(peers.stdout, /KIM \([a-z2-7]{8}, KEY CHANGED: verify again\)/);
  const json = await run('sft', ['peers', '--json', ...as('lee')], env);
  assert.deepEqual((JSON.parse(json.stdout) as Array<{ name: string; verified: boolean; trust: string }>).map((p) => [p.name, p.verified, p.trust]), [['KIM', false, 'changed']]);
  const src = path.join(work, 'pin');
  await writeRandomFile(path.join(src, 'note.txt'), 50);
  const refused = await run('sft', ['send', path.join(src, 'note.txt'), '--to', 'KIM', ...as('lee')], env);
  assert.equal(refused.code, EXIT_CODES.security, refused.stderr);
  assert.match(refused.stderr, /WARNING: KEY CHANGED/);
  await receiving.stop();
  await assert.rejects(fs.readdir(path.join(work, 'pin-impostor')), { code: 'ENOENT' }, 'nothing was offered');
});

test('after sft verify of the new key, no --trust-changed-key is needed any more (until verified again)', async (t) => {
  // The key kim met lee with above is the pin; lee now compares safety numbers with the new one.
  const impostor = ['--name', 'KIM', '--identity', path.join(work, 'id-kim-impostor')];
  const receiving = start('sft', ['receive', '--out', path.join(work, 'pin-verified'), '--yes', '--once', ...impostor], env);
  t.after(() => receiving.stop());
  await waitForLine(receiving.stderr, /Waiting for files/, 30_000);
  const verified = await run('sft', ['verify', 'KIM', '--yes', ...as('lee')], env);
  assert.equal(verified.code, EXIT_CODES.ok, verified.stderr);
  assert.match(verified.stderr, /WARNING: KEY CHANGED/, 'verify says the name had another key');
  assert.match(verified.stdout, /Marked KIM as verified/);
  const peers = await run('sft', ['peers', ...as('lee')], env);
  assert.match(peers.stdout, /KIM \([a-z2-7]{8}, verified\)/);
  const sent = await run('sft', ['send', path.join(work, 'pin', 'note.txt'), '--to', 'KIM', ...as('lee')], env);
  assert.equal(sent.code, EXIT_CODES.ok, sent.stderr);
  assert.doesNotMatch(sent.stderr, /KEY CHANGED/);
  assert.equal(await receiving.exited, EXIT_CODES.ok);
  // The pin moved: the first key coming back under the name is now the changed one.
  const old = start('sft', ['receive', '--out', path.join(work, 'pin-old'), ...as('kim')], env);
  t.after(() => old.stop());
  await waitForLine(old.stderr, /Waiting for files/, 30_000);
  const back = await run('sft', ['peers', ...as('lee')], env);
  await old.stop();
  assert.match(back.stdout, /kim \([a-z2-7]{8}, KEY CHANGED: verify again\)/);
});

test('Ctrl-C in sft receive cancels the transfer under way and leaves nothing partial', async () => {
  const src = path.join(work, 'interrupt');
  const out = path.join(work, 'interrupted');
  await writeRandomFile(path.join(src, 'long.bin'), 200 * 1024 * 1024, 'interrupt');
  const receiver = start('sft', ['receive', '--out', out, '--yes', ...as('ivan')], env);
  await waitForLine(receiver.stderr, /Waiting for files/);
  const sending = run('sft', ['send', path.join(src, 'long.bin'), '--to', 'ivan', ...as('judy')], env);
  await waitForLine(receiver.stderr, /^receiving [1-9]\d?%/, 30_000);
  receiver.child.kill('SIGINT');
  await receiver.exited;
  const sent = await sending;
  assert.notEqual(sent.code, EXIT_CODES.ok);
  assert.match(sent.stderr, /Not delivered to ivan/);
  assert.deepEqual(await listTree(out), [], 'no partial file remains');
});
