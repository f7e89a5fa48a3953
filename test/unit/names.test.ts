import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { SftError } from '../../extension/core/errors';
import {
  MAX_NAME_BYTES,
  MAX_PATH_BYTES,
  MAX_PATH_DEPTH,
  checkReceivedPath,
  checkReceivedPaths,
  escapeForDisplay,
  numberedName,
  resolveInside,
  temporaryNameFor,
} from '../../extension/core/names';

/** Nothing that could hide or reorder text may reach a message shown to the user. */
const RAW_HIDDEN = /[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/u;

function assertUnsafe(fn: () => unknown, label: string): SftError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof SftError, `${label}: expected an SftError, got ${String(caught)}`);
  assert.equal(caught.code, 'UNSAFE_NAME', label);
  assert.doesNotMatch(caught.message, RAW_HIDDEN, `${label}: message shows a raw hidden character`);
  return caught;
}

const ACCEPTED: readonly string[] = [
  'project/.git/config', // A nested repository, sent on purpose, lands in its own folder.
  '.gitignore',
  'a.txt',
  'dir/sub/file.bin',
  '日本語/ファイル.txt',
  'caf\u00e9.txt', // NFC
  'my report (final) v2.pdf',
  ' leading space.txt', // Windows keeps leading spaces
  '.gitignore',
  'config/.env.local',
  '...a',
  '..a',
  'a..b',
  'CONSOLE.txt',
  'COM10',
  'LPT',
  'nullable.js',
  'auxiliary/x.c',
  'x/CONx/y',
  '\u2764\ufe0f.png', // emoji with a variation selector
  '\ud83d\ude00.txt', // astral character, well-formed pair
  'Ω.txt', // U+03A9, the NFC form of the ohm sign
  "it's #1 & 100% [ok] {x} ~$@!+=,;.txt",
  'x'.repeat(MAX_NAME_BYTES),
  '\u00e9'.repeat(127) + 'x', // 254 + 1 bytes
  Array.from({ length: MAX_PATH_DEPTH }, () => 'd').join('/'),
  Array.from({ length: 16 }, () => 'y'.repeat(255)).join('/'), // 16 * 256 - 1 = 4095 bytes
];

// [label, path, part of the reason given]: one or more rows per rule.
const REJECTED: readonly (readonly [string, unknown, string])[] = [
  ['not a string', 42, 'not text'],
  ['empty', '', 'is empty'],
  ['leading slash (absolute)', '/etc/passwd', 'absolute'],
  ['only a slash', '/', 'absolute'],
  ['double slash', 'a//b', 'empty part'],
  ['trailing slash', 'a/', 'empty part'],
  ['dot', '.', '"." part'],
  ['dot part', 'a/./b', '"." part'],
  ['dot-dot', '..', 'climbs out'],
  ['dot-dot prefix', '../x', 'climbs out'],
  ['dot-dot inside', 'a/../../b', 'climbs out'],
  ['dot-dot last', 'a/..', 'climbs out'],
  ['a top-level .git (hooks would run)', '.git/hooks/post-checkout', '.git'],
  ['a top-level .GIT in another case', '.GIT/config', '.git'],
  ['the Windows short name of .git', 'GIT~1/hooks/pre-commit', '.git'],
  ['drive letter', 'C:', 'drive letter'],
  ['drive-relative', 'c:foo', 'drive letter'],
  ['drive absolute', 'D:\\Windows\\x', 'drive letter'],
  ['drive letter in a later part', 'a/C:x', 'colon'],
  ['colon', 'ab:c', 'colon'],
  ['NTFS alternate data stream', 'file.txt:hidden', 'colon'],
  ['NTFS $DATA stream', 'file.txt::$DATA', 'colon'],
  ['UNC', '\\\\server\\share\\x', 'UNC'],
  ['UNC device path', '\\\\?\\C:\\x', 'UNC'],
  ['backslash', 'a\\b', 'backslash'],
  ['backslash climbing', '..\\..\\x', 'backslash'],
  ['leading backslash', '\\x', 'backslash'],
  ['NUL', 'a\u0000b', 'control'],
  ['tab', 'a\tb', 'control'],
  ['newline', 'a\nb', 'control'],
  ['carriage return', 'a\rb', 'control'],
  ['escape', '\u001b[31mred', 'control'],
  ['DEL', 'a\u007fb', 'control'],
  ['C1 control', 'a\u0085b', 'control'],
  ['C1 CSI', 'a\u009bb', 'control'],
  ['line separator', 'a\u2028b', 'control'],
  ['paragraph separator', 'a\u2029b', 'control'],
  ['RLO', 'evil\u202etxt.exe', 'text-direction'],
  ['LRE', 'a\u202ab', 'text-direction'],
  ['PDF', 'a\u202cb', 'text-direction'],
  ['LRI', 'a\u2066b', 'text-direction'],
  ['PDI', 'a\u2069b', 'text-direction'],
  ['LRM', 'a\u200eb', 'text-direction'],
  ['RLM', 'a\u200fb', 'text-direction'],
  ['ALM', 'a\u061cb', 'text-direction'],
  ['BOM', '\ufeffa.txt', 'invisible'],
  ['zero-width space', 'a\u200bb', 'invisible'],
  ['zero-width non-joiner', '.g\u200cit/config', 'invisible'],
  ['zero-width joiner', 'a\u200db', 'invisible'],
  ['word joiner', 'a\u2060b', 'invisible'],
  ['soft hyphen', 'a\u00adb', 'invisible'],
  ['Hangul filler', '\u3164.txt', 'invisible'],
  ['tag character', 'a\u{e0041}b', 'invisible'],
  ['noncharacter', 'a\ufffeb', 'noncharacter'],
  ['astral noncharacter', 'a\u{1fffe}b', 'noncharacter'],
  ['lone high surrogate', 'a\ud800b.txt', 'well-formed'],
  ['lone low surrogate', '\udc00', 'well-formed'],
  ['reversed surrogate pair', '\ude00\ud83d', 'well-formed'],
  ['less than', 'a<b', 'forbids'],
  ['greater than', 'a>b', 'forbids'],
  ['double quote', 'a"b', 'forbids'],
  ['pipe', 'a|b', 'forbids'],
  ['question mark', 'a?b', 'forbids'],
  ['asterisk', '*.txt', 'forbids'],
  ['trailing dot', 'a.', 'ends with a dot'],
  ['trailing dots', 'dir./x', 'ends with a dot'],
  ['three dots', '...', 'ends with a dot'],
  ['trailing space', 'a ', 'ends with a dot or a space'],
  ['trailing space folder', 'dir /x', 'ends with a dot or a space'],
  ['CON', 'CON', 'device'],
  ['con lower case', 'con', 'device'],
  ['Con with extension', 'Con.txt', 'device'],
  ['NUL with double extension', 'NUL.tar.gz', 'device'],
  ['nul with space before extension', 'nul .txt', 'device'],
  ['AUX as folder', 'aux/x.txt', 'device'],
  ['PRN deep', 'a/b/PRN.log', 'device'],
  ['COM0', 'COM0', 'device'],
  ['COM1', 'com1', 'device'],
  ['COM9 with extension', 'COM9.log', 'device'],
  ['LPT0', 'lpt0', 'device'],
  ['LPT9', 'LPT9.txt', 'device'],
  ['COM superscript one', 'COM\u00b9', 'device'],
  ['COM superscript two', 'com\u00b2.txt', 'device'],
  ['LPT superscript three', 'LPT\u00b3', 'device'],
  ['CONIN$', 'CONIN$', 'device'],
  ['conout$ with extension', 'conout$.txt', 'device'],
  ['component too long', 'x'.repeat(MAX_NAME_BYTES + 1), 'longer than 255'],
  ['component too long in bytes', '\u00e9'.repeat(128), 'longer than 255'], // 256 bytes, 128 characters
  ['path too long', Array.from({ length: 18 }, () => 'y'.repeat(240)).join('/'), 'longer than 4096'],
  ['path far too long', 'a/'.repeat(100_000) + 'a', 'longer than 4096'],
  ['path too deep', Array.from({ length: MAX_PATH_DEPTH + 1 }, () => 'd').join('/'), 'folders deep'],
  ['NFD', 'cafe\u0301.txt', 'normal form C'],
  ['ohm sign (not NFC)', '\u2126.txt', 'normal form C'],
  ['NFD folder', 'e\u0301/x', 'normal form C'],
];

test('accepts ordinary relative paths and returns their components', () => {
  for (const name of ACCEPTED) {
    assert.deepEqual(checkReceivedPath(name), name.split('/'), JSON.stringify(name));
  }
  assert.deepEqual(checkReceivedPath('dir/sub/file.bin'), ['dir', 'sub', 'file.bin']);
});

test('the size limits are what the protocol promises', () => {
  assert.equal(MAX_NAME_BYTES, 255);
  assert.equal(MAX_PATH_BYTES, 4096);
  assert.equal(MAX_PATH_DEPTH, 64);
});

test('refuses every unsafe path with UNSAFE_NAME', () => {
  for (const [label, name, reason] of REJECTED) {
    const error = assertUnsafe(() => checkReceivedPath(name as string), label);
    assert.ok(error.message.includes(reason), `${label}: "${reason}" not in ${error.message.slice(0, 300)}`);
  }
});

test('refusals name the problem in plain English', () => {
  assert.equal(
    assertUnsafe(() => checkReceivedPath('..'), '..').message,
    'Refused the name "..": it climbs out of the destination folder.',
  );
  const rlo = assertUnsafe(() => checkReceivedPath('evil\u202etxt.exe'), 'RLO').message;
  assert.match(rlo, /evil\\u\{202E\}txt\.exe/);
  assert.match(rlo, /text-direction/);
  assert.match(assertUnsafe(() => checkReceivedPath('NUL.txt'), 'NUL').message, /device name/);
  assert.match(assertUnsafe(() => checkReceivedPath('cafe\u0301'), 'NFD').message, /normal form C/);
});

test('checkReceivedPaths accepts distinct names and returns their components', () => {
  assert.deepEqual(checkReceivedPaths(['a.txt', 'b/a.txt', 'b/c/a.txt', 'B/d.txt']), [
    ['a.txt'],
    ['b', 'a.txt'],
    ['b', 'c', 'a.txt'],
    ['B', 'd.txt'],
  ]);
  assert.deepEqual(checkReceivedPaths([]), []);
});

test('checkReceivedPaths refuses any unsafe entry', () => {
  assertUnsafe(() => checkReceivedPaths(['a.txt', '../b.txt']), 'one bad entry');
});

test('checkReceivedPaths refuses names that collide', () => {
  const collisions: readonly (readonly [string, readonly string[]])[] = [
    ['exact duplicate', ['a.txt', 'a.txt']],
    ['case', ['A.txt', 'a.txt']],
    ['case in a folder', ['Docs/readme.md', 'docs/README.md']],
    ['NFKC ligature', ['\ufb01le', 'file']],
    ['NFKC fullwidth', ['\uff21.txt', 'a.txt']],
    ['sharp s', ['stra\u00dfe', 'STRASSE']],
    ['dotless i', ['\u0131.txt', 'I.txt']],
    ['file used as a folder, file first', ['a', 'a/b']],
    ['file used as a folder, folder first', ['a/b', 'a']],
    ['file used as a folder, deeper', ['x/y/z', 'x/y']],
    ['file used as a folder, other case', ['A', 'a/b']],
  ];
  for (const [label, paths] of collisions) {
    const error = assertUnsafe(() => checkReceivedPaths(paths), label);
    assert.match(error.message, /^Refused the names "/, label);
  }
  assert.equal(
    assertUnsafe(() => checkReceivedPaths(['A.txt', 'a.txt']), 'case').message,
    'Refused the names "A.txt" and "a.txt": they would be the same file on some systems.',
  );
  assert.equal(
    assertUnsafe(() => checkReceivedPaths(['a', 'a/b']), 'folder').message,
    'Refused the names "a" and "a/b": the first would have to be both a file and a folder.',
  );
});

test('an NFD spelling never reaches the collision check: it is refused on its own', () => {
  assertUnsafe(() => checkReceivedPaths(['caf\u00e9.txt', 'cafe\u0301.txt']), 'NFC vs NFD');
  assert.match(
    assertUnsafe(() => checkReceivedPaths(['caf\u00e9.txt', 'cafe\u0301.txt']), 'NFC vs NFD').message,
    /normal form C/,
  );
});

test('resolveInside joins components under the root', () => {
  const root = path.resolve('sft-destination');
  assert.equal(resolveInside(root, ['a.txt']), path.join(root, 'a.txt'));
  assert.equal(resolveInside(root, ['dir', 'sub', 'file.bin']), path.join(root, 'dir', 'sub', 'file.bin'));
  assert.equal(resolveInside(root, ['..a']), path.join(root, '..a'));
  assert.equal(resolveInside(root + path.sep, ['a']), path.join(root, 'a'));
});

test('resolveInside cannot be made to leave the root, even with unchecked components', () => {
  const root = path.resolve('sft-destination');
  const escapes: readonly (readonly string[])[] = [
    [],
    [''],
    ['.'],
    ['..'],
    ['..', 'x'],
    ['a', '..'],
    ['a', '..', '..', 'etc', 'passwd'],
    ['..', 'sft-destination-evil', 'x'], // a sibling whose name starts with the root's
    ['a/../../x'],
    [`..${path.sep}x`],
  ];
  for (const components of escapes) {
    assertUnsafe(() => resolveInside(root, components), JSON.stringify(components));
  }
});

test('escapeForDisplay makes hidden characters visible', () => {
  const shown = escapeForDisplay('evil\u202etxt.exe');
  assert.equal(shown, 'evil\\u{202E}txt.exe');
  assert.ok(!shown.includes('\u202e'));
  assert.equal(escapeForDisplay('line1\nline2'), 'line1\\u{000A}line2');
  assert.equal(escapeForDisplay('a\u0000b\u007fc\u009bd'), 'a\\u{0000}b\\u{007F}c\\u{009B}d');
  assert.equal(escapeForDisplay('\ufeffa\u200bb\u2066c'), '\\u{FEFF}a\\u{200B}b\\u{2066}c');
  assert.equal(escapeForDisplay('x\ud800y'), 'x\\u{D800}y');
  assert.equal(escapeForDisplay('a\u2028b'), 'a\\u{2028}b');
  // Backslashes are doubled, so an escape in the output always stands for an escaped character.
  assert.equal(escapeForDisplay('a\\u{202E}b'), 'a\\\\u{202E}b');
  for (const hidden of ['\u061c', '\u200e', '\u200f', '\u202a', '\u202e', '\u2069', '\u200d', '\u{e0041}']) {
    assert.doesNotMatch(escapeForDisplay(`a${hidden}b`), RAW_HIDDEN, `U+${hidden.codePointAt(0)!.toString(16)}`);
  }
});

test('escapeForDisplay leaves ordinary text alone', () => {
  for (const text of ['caf\u00e9.txt', '日本語/ファイル.txt', 'a b.txt', '\u2764\ufe0f \ud83d\ude00', 'Ωμέγα', '']) {
    assert.equal(escapeForDisplay(text), text);
  }
});

test('escapeForDisplay caps long text with an ellipsis, never splitting a character', () => {
  assert.equal(escapeForDisplay('x'.repeat(200)), 'x'.repeat(200));
  assert.equal(escapeForDisplay('x'.repeat(201)), `${'x'.repeat(200)}…`);
  const emoji = escapeForDisplay('\ud83d\ude00'.repeat(500));
  assert.equal(emoji, `${'\ud83d\ude00'.repeat(200)}…`);
  const escapes = escapeForDisplay('\u202e'.repeat(500));
  assert.ok(escapes.endsWith('\\u{202E}…'), 'an escape is never cut in half');
  assert.ok([...escapes].length <= 201);
  assert.ok(escapeForDisplay('y'.repeat(10_000_000)).length <= 201);
});

test('temporaryNameFor makes a hidden sibling name marked with the transfer', () => {
  assert.equal(temporaryNameFor('a.txt', '0123456789abcdefXYZ'), '.a.txt.0123456789ab.sft-partial');
  assert.equal(temporaryNameFor('.gitignore', 'abc'), '..gitignore.abc.sft-partial');
  assert.deepEqual(checkReceivedPath(temporaryNameFor('a.txt', 'abc')), ['.a.txt.abc.sft-partial']);
});

test('temporaryNameFor stays within MAX_NAME_BYTES without splitting characters', () => {
  const id = 'f'.repeat(64);
  const names = [
    '日'.repeat(82) + '.txt', // 250 bytes, 3 bytes per character
    '\ud83d\ude00'.repeat(62) + '.b', // 250 bytes, 4 bytes per character
    '\u00e9'.repeat(127), // 254 bytes
    'x'.repeat(MAX_NAME_BYTES),
    'a'.repeat(200) + ' b'.repeat(27), // a cut may end in a space; the suffix keeps it inside
  ];
  for (const name of names) {
    assert.ok(Buffer.byteLength(name) <= MAX_NAME_BYTES);
    const temp = temporaryNameFor(name, id);
    assert.ok(Buffer.byteLength(temp) <= MAX_NAME_BYTES, `${temp.length} units`);
    assert.ok(temp.endsWith(`.${'f'.repeat(12)}.sft-partial`));
    assert.ok(temp.startsWith(`.${name.slice(0, 20)}`));
    assert.deepEqual(checkReceivedPath(temp), [temp], 'the temporary name is itself a safe name');
  }
  const cut = temporaryNameFor('日'.repeat(82) + '.txt', id);
  assert.equal(Buffer.byteLength(cut), 254, 'cut at the last whole character that fits');
});

test('temporaryNameFor keeps an odd transfer id from making the name unsafe', () => {
  const temp = temporaryNameFor('a.txt', '../:\u202e/x');
  assert.equal(temp, '.a.txt.x.sft-partial');
  assert.deepEqual(checkReceivedPath(temp), [temp]);
});

test('temporaryNameFor refuses a final name that is not one safe component', () => {
  assertUnsafe(() => temporaryNameFor('a/b', 'id'), 'a path');
  assertUnsafe(() => temporaryNameFor('..', 'id'), 'dot-dot');
  assertUnsafe(() => temporaryNameFor('', 'id'), 'empty');
});

test('numberedName: "name (n).ext", cut to fit a file name, never splitting a character, the extension kept', () => {
  assert.equal(numberedName('report.pdf', 1), 'report (1).pdf');
  assert.equal(numberedName('.bashrc', 2), '.bashrc (2)');
  assert.equal(numberedName('archive', 12), 'archive (12)');
  const long = `${'é'.repeat(126)}x.txt`; // 252 + 5 bytes: too long once numbered
  const numbered = numberedName(long, 3);
  assert.ok(Buffer.byteLength(numbered) <= 255, `${Buffer.byteLength(numbered)} bytes`);
  assert.ok(numbered.endsWith(' (3).txt'));
  assert.ok(!numbered.includes('\uFFFD'));
  assert.deepEqual(checkReceivedPath(numbered), [numbered]);
});
