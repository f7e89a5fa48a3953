/**
 * Fails the build when package.json and the extension disagree: a contributed command with no
 * handler, a handler with no contribution, or a menu, keybinding or welcome link naming a command
 * that does not exist. Run by `npm run lint`; test/unit/contributions.test.ts shows it failing.
 */
import fs from 'node:fs';
import path from 'node:path';

export interface Manifest {
  contributes?: {
    commands?: Array<{ command: string; title?: string; category?: string }>;
    menus?: Record<string, Array<{ command?: string }>>;
    keybindings?: Array<{ command: string }>;
    viewsWelcome?: Array<{ contents: string }>;
  };
}

const PREFIX = 'secureFileTransfer.';

/** Command ids the sources register: `registerCommand('id', …)` and the shell's `register('name', …)`. */
export function registeredCommands(sources: readonly string[]): Set<string> {
  const ids = new Set<string>();
  for (const source of sources) {
    for (const m of source.matchAll(/registerCommand\(\s*['"`]([\w.]+)['"`]/g)) ids.add(m[1]!);
    for (const m of source.matchAll(/\bregister\(\s*['"`](\w+)['"`]/g)) ids.add(`${PREFIX}${m[1]}`);
  }
  return ids;
}

export function checkContributions(manifest: Manifest, sources: readonly string[]): string[] {
  const problems: string[] = [];
  const contributed = manifest.contributes?.commands ?? [];
  const ids = new Set(contributed.map((c) => c.command));
  const registered = registeredCommands(sources);
  for (const c of contributed) {
    if (!registered.has(c.command)) problems.push(`${c.command} is contributed in package.json but never registered`);
    if (!c.title || !c.category) problems.push(`${c.command} needs a title and a category`);
  }
  for (const id of registered) if (!ids.has(id)) problems.push(`${id} is registered but not contributed in package.json`);
  for (const [menu, items] of Object.entries(manifest.contributes?.menus ?? {})) {
    for (const item of items) if (item.command && !ids.has(item.command)) problems.push(`menu ${menu} names ${item.command}, which is not contributed`);
  }
  for (const k of manifest.contributes?.keybindings ?? []) if (!ids.has(k.command)) problems.push(`a keybinding names ${k.command}, which is not contributed`);
  for (const w of manifest.contributes?.viewsWelcome ?? []) {
    for (const m of w.contents.matchAll(/\(command:([\w.]+)\)/g)) if (!ids.has(m[1]!)) problems.push(`a welcome view links ${m[1]}, which is not contributed`);
  }
  for (const c of contributed) if (!c.command.startsWith(PREFIX)) problems.push(`${c.command} should start with ${PREFIX}`);
  return problems;
}

function main(): void {
  const root = path.resolve(__dirname, '..');
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as Manifest;
  const dir = path.join(root, 'extension', 'vscode');
  const sources = fs.readdirSync(dir).filter((f) => f.endsWith('.ts')).map((f) => fs.readFileSync(path.join(dir, f), 'utf8'));
  const problems = checkContributions(manifest, sources);
  if (problems.length > 0) {
    process.stderr.write(`package.json and extension/vscode disagree:\n${problems.map((p) => `  - ${p}`).join('\n')}\n`);
    process.exit(1);
  }
  process.stdout.write(`contributions: ${manifest.contributes?.commands?.length ?? 0} commands, each contributed and registered.\n`);
}

if (require.main === module) main();
