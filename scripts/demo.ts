/**
 * `npm run demo`: the two-client demonstration, on an embedded relay with no external service.
 *
 * It starts a relay (with a team token and an audit log) behind a tap that sees every byte the
 * relay sends and receives, joins two clients, and has client2 send a Word document, a PDF, an
 * image and a video-sized binary to client1, which saves them under names it chooses. Then it
 * checks every hash, shows rates, and checks that no file name and no content marker ever crossed
 * the relay in the clear. Exit code 0 only if all of that holds.
 *
 * Environment: SFT_DEMO_VIDEO_MB (default 300) sizes the binary; SFT_DEMO_KEEP=1 keeps the files.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createRelay } from '../server/relay';
import { RelayClient } from '../extension/core/client';
import { Identity, safetyNumber } from '../extension/core/crypto/identity';
import { Inbox, type ReceiveResult } from '../extension/core/transfer/receiver';
import { sendFiles } from '../extension/core/transfer/sender';
import { formatBytes, formatDuration, formatRate } from '../extension/core/format';
import { generateSamples } from './samples';
import { NeedleScanner, startTapProxy } from './tap-proxy';
import { sha256File } from './hash';

const SAVE_AS: Record<string, string> = {
  'quarterly-report.docx': 'client1-report.docx',
  'design-spec.pdf': 'client1-spec.pdf',
  'architecture.png': 'client1-diagram.png',
  'demo-video.mp4': 'client1-video.mp4',
};

const say = (line = '') => process.stdout.write(`${line}\n`);

async function main(): Promise<number> {
  const videoBytes = Number(process.env.SFT_DEMO_VIDEO_MB ?? 300) * 1024 * 1024;
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'sft-demo-'));
  const outbox = path.join(work, 'client2-outbox');
  const inbox = path.join(work, 'client1-downloads');
  const auditFile = path.join(work, 'relay-audit.jsonl');
  const teamToken = crypto.randomBytes(18).toString('base64url');

  say('Secure File Transfer demo');
  say(`  working folder: ${work}`);
  say(`  generating test files (video-sized binary: ${formatBytes(videoBytes)})…`);
  const samples = await generateSamples(outbox, { videoBytes });

  const relay = createRelay({ tokens: [teamToken], auditLog: auditFile });
  const relayUrl = await relay.start();
  const needles = new Map<string, Buffer>();
  for (const s of samples) {
    needles.set(`name ${s.name}`, Buffer.from(s.name));
    needles.set(`name ${s.name} (UTF-16)`, Buffer.from(s.name, 'utf16le'));
  }
  needles.set('content marker', Buffer.from(samples[0]!.marker));
  const scanner = new NeedleScanner(needles);
  const tap = await startTapProxy(relayUrl, (_direction, data) => scanner.feed(data));
  say(`  relay: ${relayUrl} (clients connect through a tap at ${tap.url} that inspects every byte)`);

  const client1 = new RelayClient({ url: tap.url, token: teamToken, identity: Identity.generate(), name: 'client1' });
  const client2 = new RelayClient({ url: tap.url, token: teamToken, identity: Identity.generate(), name: 'client2' });
  const client1Inbox = new Inbox(client1);
  try {
    await client1.connect();
    await client2.connect();
    while (!client2.peers.has(client1.identity.peerId)) await new Promise((r) => setTimeout(r, 10));
    const peer1 = client2.findPeer('client1');
    say(`  client1 ${client1.identity.peerId} and client2 ${client2.identity.peerId} joined`);
    say(`  safety number (same on both screens): ${safetyNumber(client1.identity, client2.identity)}`);
    say();

    const received = new Promise<ReceiveResult>((resolve, reject) => {
      client1Inbox.once('offer', (offer) => {
        say(`client1: ${offer.sender.name} wants to send ${offer.fileCount} files (${formatBytes(offer.totalBytes)}): ${offer.entries.map((e) => e.path).join(', ')}`);
        say('client1: accepting, saving under designated names');
        offer.accept({ directory: inbox, rename: (p) => SAVE_AS[p], onConflict: 'fail' }).then(resolve, reject);
      });
      client1Inbox.once('refused', (r) => reject(r.error));
    });

    let lastPercent = -10;
    const sent = await sendFiles(client2, {
      paths: samples.map((s) => s.path),
      to: [peer1],
      onProgress: (p) => {
        const percent = Math.floor((p.bytes / p.total) * 100);
        if (percent >= lastPercent + 10) {
          lastPercent = percent;
          say(`client2: ${String(percent).padStart(3)}%  ${formatBytes(p.bytes)} of ${formatBytes(p.total)}  ${formatRate(p.rate)}`);
        }
      },
    });
    const result = await received;
    say();

    let ok = sent.recipients.every((r) => r.outcome === 'done');
    say('file                          saved as                   size        sha-256 match');
    for (const sample of samples) {
      const saved = result.files.find((f) => f.receivedPath === sample.name);
      const expectedPath = path.join(inbox, SAVE_AS[sample.name]!);
      const match = saved?.savedAs === expectedPath && (await sha256File(expectedPath)) === sample.sha256;
      ok &&= match;
      say(`${sample.name.padEnd(30)}${path.basename(saved?.savedAs ?? '-').padEnd(27)}${formatBytes(sample.size).padEnd(12)}${match ? 'yes' : 'NO'} (${sample.kind})`);
    }
    const leftovers = (await fs.readdir(inbox)).filter((n) => n.endsWith('.sft-partial'));
    ok &&= leftovers.length === 0;

    const seconds = sent.durationMs / 1000;
    say();
    say(`transfer: ${formatBytes(sent.plainBytes)} in ${formatDuration(seconds)} (${formatRate(sent.plainBytes / seconds)}), ${formatBytes(sent.cipherBytes)} of ciphertext`);
    say(`the relay carried ${formatBytes(scanner.bytes)} in both directions`);
    const leaks = [...scanner.found];
    ok &&= leaks.length === 0;
    say(leaks.length === 0 ? 'the relay saw only ciphertext: no file name and no content marker crossed it in the clear' : `LEAK: the relay saw ${leaks.join(', ')}`);

    const audit = (await fs.readFile(auditFile, 'utf8').catch(() => '')).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { event: string });
    const auditText = await fs.readFile(auditFile, 'utf8').catch(() => '');
    const auditClean = samples.every((s) => !auditText.includes(s.name));
    ok &&= auditClean;
    say(`relay audit log: ${audit.map((a) => a.event).join(', ')}; ${auditClean ? 'no file names in it' : 'FILE NAMES IN IT'}`);
    say();
    say(ok ? 'demo passed: every file arrived byte-identical, end-to-end encrypted' : 'demo FAILED');
    return ok ? 0 : 1;
  } finally {
    client1Inbox.dispose();
    client1.close();
    client2.close();
    await tap.close();
    await relay.stop();
    if (process.env.SFT_DEMO_KEEP === '1') say(`(kept ${work})`);
    else await fs.rm(work, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`demo failed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
