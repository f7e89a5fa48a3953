/** The build check that keeps package.json's commands and the extension's registrations in step. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { checkContributions, type Manifest } from '../../scripts/check-contributions';

const root = path.resolve(__dirname, '..', '..');
const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as Manifest;
const dir = path.join(root, 'extension', 'vscode');
const sources = fs.readdirSync(dir).filter((f) => f.endsWith('.ts')).map((f) => fs.readFileSync(path.join(dir, f), 'utf8'));

test('the real manifest and sources agree', () => {
  assert.deepEqual(checkContributions(manifest, sources), []);
});

test('a contributed command without a handler fails the check', () => {
  const extra: Manifest = { contributes: { ...manifest.contributes, commands: [...manifest.contributes!.commands!, { command: 'secureFileTransfer.ghost', title: 'Ghost', category: 'Secure Transfer' }] } };
  assert.deepEqual(checkContributions(extra, sources), ['secureFileTransfer.ghost is contributed in package.json but never registered']);
});

test('a handler without a contribution fails the check', () => {
  const problems = checkContributions(manifest, [...sources, "register('secret', () => undefined);"]);
  assert.deepEqual(problems, ['secureFileTransfer.secret is registered but not contributed in package.json']);
});

test('menus and welcome links must name contributed commands; commands need a title and a category', () => {
  const broken: Manifest = {
    contributes: {
      commands: [{ command: 'secureFileTransfer.a', title: 'A' }],
      menus: { 'explorer/context': [{ command: 'secureFileTransfer.b' }] },
      viewsWelcome: [{ contents: '[Go](command:secureFileTransfer.c)' }],
    },
  };
  assert.deepEqual(checkContributions(broken, ["register('a', f)"]), [
    'secureFileTransfer.a needs a title and a category',
    'menu explorer/context names secureFileTransfer.b, which is not contributed',
    'a welcome view links secureFileTransfer.c, which is not contributed',
  ]);
});
