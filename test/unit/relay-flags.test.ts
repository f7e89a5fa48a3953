/**
 * The relay's Node flags (server/heap.ts) cannot be set from inside the process, so each launcher
 * passes them itself: the `sft-relay` executable's `#!` line, the systemd unit and the container
 * image. This checks that all of them carry every flag, and that the executable starts with them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { RELAY_NODE_FLAGS } from '../../server/heap';

const ROOT = path.resolve(__dirname, '..', '..');
const read = (file: string) => fs.readFileSync(path.join(ROOT, file), 'utf8');

test('every launcher of the relay passes its Node flags', () => {
  const shebang = read('bin/sft-relay.js').split('\n')[0]!;
  const execStart = read('deploy/sft-relay.service').split('\n').find((l) => l.startsWith('ExecStart='))!;
  const entrypoint = read('deploy/Containerfile').split('\n').find((l) => l.startsWith('ENTRYPOINT'))!;
  assert.ok(RELAY_NODE_FLAGS.length > 0);
  for (const flag of RELAY_NODE_FLAGS) {
    assert.match(shebang, new RegExp(`^#!/usr/bin/env -S node .*${flag}`), 'bin/sft-relay.js');
    assert.match(execStart, new RegExp(`/node ${flag} .*bin/sft-relay\\.js`), 'deploy/sft-relay.service');
    assert.ok(JSON.parse(entrypoint.slice('ENTRYPOINT'.length)).includes(flag), 'deploy/Containerfile');
  }
});

test('sft-relay, run as an executable, has the flags', { skip: process.platform === 'win32' && 'no #! lines on Windows (npm writes a .cmd from it)' }, () => {
  // The relay's bundle prints its version and exits; node shows the flags it was given in execArgv.
  const argv = execFileSync(path.join(ROOT, 'bin', 'sft-relay.js'), ['--version'], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '--require ' + path.join(__dirname, 'fixtures', 'print-exec-argv.cjs') } });
  const printed = JSON.parse(argv.split('\n')[0]!) as string[];
  for (const flag of RELAY_NODE_FLAGS) assert.ok(printed.includes(flag), `execArgv ${JSON.stringify(printed)} lacks ${flag}`);
});
