/**
 * The one place that decides whether a file path chosen by the sender is safe to create, and where
 * it lands. The sender may be hostile, and the receiver may be on Windows, macOS or Linux, so a name
 * is accepted only if it means the same single file, inside the chosen folder, on all three.
 *
 * Received paths are relative, use "/" as the only separator, and are refused (never repaired):
 * quietly "fixing" a name would let two different received names become one file.
 */
import path from 'node:path';
import { SftError } from './errors';

/** Per path component, in UTF-8 bytes: the limit of ext4, APFS and (in UTF-16 units, looser) NTFS. */
export const MAX_NAME_BYTES = 255;
/** Whole received path, in UTF-8 bytes: Linux PATH_MAX, and a bound on the work we do per name. */
export const MAX_PATH_BYTES = 4096;
/** Components per path: far deeper than real trees, shallow enough to keep Windows paths sane. */
export const MAX_PATH_DEPTH = 64;

/** Longest text escapeForDisplay returns, in code points, before the ellipsis. */
const MAX_DISPLAY_CHARS = 200;
export const TEMP_SUFFIX = '.sft-partial';
const BOTH_FILE_AND_FOLDER = 'the first would have to be both a file and a folder';

// Character classes. All use \p{...} so the sets track the Unicode version of the running Node.
// C0, DEL and C1 controls, plus the Unicode line and paragraph separators, which break log lines.
const CONTROL = /\p{Cc}|\p{Zl}|\p{Zp}/u;
// U+061C, U+200E/F, U+202A–E, U+2066–9: they reorder what is shown ("evil\u202Etxt.exe").
const BIDI = /\p{Bidi_Control}/u;
// Format and default-ignorable characters draw nothing, so they make two names look the same; HFS+
// even ignores some of them when comparing names (the ".g\u200Cit" attack on git). Variation selectors
// are let through: they are what makes "❤️" an emoji, and they cannot hide or reorder text.
const INVISIBLE = /(?!\p{Variation_Selector})[\p{Cf}\p{Default_Ignorable_Code_Point}]/u;
// U+FFFE, U+FDD0… are promised never to be characters; no honest name contains one.
const NONCHARACTER = /\p{Noncharacter_Code_Point}/u;
// In u-mode \p{Cs} matches only unpaired surrogates, which have no UTF-8 form: the file system would
// store a replacement character or refuse, so the name on disk would not be the name we checked.
const LONE_SURROGATE = /\p{Cs}/u;

/** Characters escapeForDisplay makes visible: anything that could hide, reorder or break text. */
const HIDDEN = [CONTROL, BIDI, INVISIBLE, NONCHARACTER, LONE_SURROGATE];

/**
 * Windows device names. Opening "NUL.txt" or "com1.log" in any folder opens the device instead,
 * whatever the extension; "¹²³" count as digits for COM and LPT.
 */
const WINDOWS_DEVICES = new Set([
  'CON', 'PRN', 'AUX', 'NUL', 'CONIN$', 'CONOUT$',
  ...[...'0123456789¹²³'].flatMap((digit) => [`COM${digit}`, `LPT${digit}`]),
]);

type Rule = { readonly breaks: (text: string) => boolean; readonly why: string };

/** Rules about the path as a whole, checked before it is split. */
const PATH_RULES: readonly Rule[] = [
  { breaks: (p) => p.length === 0, why: 'is empty' },
  // UTF-16 length never exceeds UTF-8 length, so the first test bounds the work on huge input.
  {
    breaks: (p) => p.length > MAX_PATH_BYTES || utf8Bytes(p) > MAX_PATH_BYTES,
    why: `is longer than ${MAX_PATH_BYTES} bytes`,
  },
  { breaks: (p) => LONE_SURROGATE.test(p), why: 'is not well-formed Unicode (it has an unpaired surrogate)' },
  // The next three would all be refused later anyway; they are here for a clearer message.
  { breaks: (p) => p.startsWith('/'), why: 'is an absolute path' },
  { breaks: (p) => p.startsWith('\\\\'), why: 'is a Windows network (UNC) path' },
  { breaks: (p) => /^[a-z]:/i.test(p), why: 'starts with a Windows drive letter' },
  { breaks: (p) => p.split('/').length > MAX_PATH_DEPTH, why: `is more than ${MAX_PATH_DEPTH} folders deep` },
];

/** Rules for each "/"-separated component, in order; the first broken one is reported. */
const COMPONENT_RULES: readonly Rule[] = [
  // Leading "/", trailing "/" or "a//b": the sender's tree is not what it claims to be.
  { breaks: (c) => c === '', why: 'has an empty part (a leading, trailing or doubled "/")' },
  { breaks: (c) => c === '..', why: 'climbs out of the destination folder' },
  { breaks: (c) => c === '.', why: 'has a "." part, which is the folder itself rather than a file' },
  { breaks: (c) => CONTROL.test(c), why: 'contains a control character or line break' },
  { breaks: (c) => BIDI.test(c), why: 'contains a text-direction control, which can disguise the name' },
  { breaks: (c) => INVISIBLE.test(c), why: 'contains an invisible character, which can disguise the name' },
  { breaks: (c) => NONCHARACTER.test(c), why: 'contains a Unicode noncharacter' },
  // Windows treats "\" as a separator, so "a\..\..\x" would climb out there.
  { breaks: (c) => c.includes('\\'), why: 'contains a backslash, which Windows reads as a folder separator' },
  // "C:x" is drive-relative and "f.txt:s" an NTFS alternate data stream on Windows.
  { breaks: (c) => c.includes(':'), why: 'contains a colon, which Windows reads as a drive or a hidden data stream' },
  { breaks: (c) => /[<>"|?*]/.test(c), why: 'contains a character Windows forbids in file names (< > " | ? *)' },
  // Windows drops them, so "a." and "a " would silently become "a" (and "..." would become "").
  { breaks: (c) => c.endsWith('.') || c.endsWith(' '), why: 'ends with a dot or a space, which Windows drops' },
  { breaks: isWindowsDevice, why: 'is a reserved Windows device name (such as CON, NUL, COM1 or LPT1)' },
  { breaks: (c) => utf8Bytes(c) > MAX_NAME_BYTES, why: `has a part longer than ${MAX_NAME_BYTES} bytes` },
  // macOS may store either spelling of "é" and treat them as one name; Linux treats them as two.
  // Accepting only NFC leaves exactly one spelling per name.
  { breaks: (c) => c.normalize('NFC') !== c, why: 'is not in Unicode normal form C, so it has two spellings' },
];

/**
 * Checks one received relative path and returns its components. Throws SftError UNSAFE_NAME,
 * naming the problem, if the path is not safe to create on every supported system.
 */
export function checkReceivedPath(receivedPath: string): string[] {
  // The path arrives from the network; the type annotation is a hope, not a guarantee.
  if (typeof receivedPath !== 'string') {
    throw new SftError('UNSAFE_NAME', 'Refused a name that is not text.');
  }
  for (const rule of PATH_RULES) {
    if (rule.breaks(receivedPath)) refuse(receivedPath, rule.why);
  }
  const components = receivedPath.split('/');
  for (const component of components) {
    for (const rule of COMPONENT_RULES) {
      if (rule.breaks(component)) refuse(receivedPath, rule.why);
    }
  }
  // Received into a repository's root, a top-level ".git" would plant hooks that run on the next
  // git command (git refuses such paths too; "git~1" is its 8.3 short name on Windows). Deeper
  // down, ".git" is a nested repository that was sent on purpose, and is allowed.
  if (['.git', 'git~1'].includes(collisionKey(components[0]!))) refuse(receivedPath, 'would land in a git repository\'s own folder (.git)');
  return components;
}

/**
 * Checks every path of one transfer, then refuses any two that would land on the same file, or
 * a file that another entry uses as a folder. Returns the components of each path, in order.
 */
export function checkReceivedPaths(paths: readonly string[]): string[][] {
  const checked = paths.map(checkReceivedPath);
  const files = new Map<string, string>(); // collision key → the path that is that file
  const folders = new Map<string, string>(); // collision key → a path that needs it as a folder
  checked.forEach((components, index) => {
    const name = paths[index]!;
    const keys = components.map(collisionKey);
    for (let depth = 1; depth < keys.length; depth++) {
      const folderKey = keys.slice(0, depth).join('/');
      const file = files.get(folderKey);
      if (file !== undefined) refuseBoth(file, name, BOTH_FILE_AND_FOLDER);
      if (!folders.has(folderKey)) folders.set(folderKey, name);
    }
    const fileKey = keys.join('/');
    const file = files.get(fileKey);
    if (file !== undefined) refuseBoth(file, name, 'they would be the same file on some systems');
    const folder = folders.get(fileKey);
    if (folder !== undefined) refuseBoth(name, folder, BOTH_FILE_AND_FOLDER);
    files.set(fileKey, name);
  });
  return checked;
}

/**
 * What two names must differ in to be two files everywhere. NTFS and APFS/HFS+ are case-insensitive
 * by default, and macOS folds Unicode spellings, so we compare compatibility-normalised (NFKC),
 * case-folded names. Upper- then lower-casing is a closer stand-in for full case folding than
 * toLowerCase alone ("ß" and "ss", "ı" and "i" meet). It folds more than any real file system does;
 * a false match only costs a refused transfer, a missed one could let one file overwrite another.
 */
export function collisionKey(component: string): string {
  return component.normalize('NFKC').toUpperCase().toLowerCase().normalize('NFKC');
}

/**
 * Joins checked components under root and proves, by string arithmetic alone, that the result is
 * strictly inside root. A second line of defence: it holds even for components nobody checked.
 * It cannot see symbolic links; whoever writes the file must not follow them.
 */
export function resolveInside(root: string, components: readonly string[]): string {
  const destination = path.join(root, ...components);
  if (!isStrictlyInside(root, destination)) refuse(components.join('/'), 'does not lead to a place inside the destination folder');
  return destination;
}

/** Whether `target` lies strictly inside `root`, by string arithmetic alone (no links followed). */
export function isStrictlyInside(root: string, target: string): boolean {
  const relative = path.relative(root, target);
  // "" is root itself; ".." or "../x" is outside; an absolute result is another drive on Windows.
  return !(relative === '' || relative === '..' || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative));
}

/**
 * Makes untrusted text safe to show in a UI, log or terminal: every character that could hide,
 * reorder or break text becomes a visible \u{XXXX} escape, and long text is cut with an ellipsis.
 * Backslashes are doubled so that an escape in the output always means an escaped character.
 */
export function escapeForDisplay(text: string): string {
  let shown = '';
  let count = 0; // code points in `shown`; cutting by code point never splits a surrogate pair
  for (const char of text) {
    const piece = char === '\\' ? '\\\\' : HIDDEN.some((set) => set.test(char)) ? unicodeEscape(char) : char;
    const width = piece === char ? 1 : piece.length; // escapes are ASCII: one unit per code point
    if (count + width > MAX_DISPLAY_CHARS) return `${shown}…`;
    shown += piece;
    count += width;
  }
  return shown;
}

/**
 * The name of the file a download is written to before it is complete: a hidden sibling of the
 * final file, marked with the transfer so that interrupted downloads are recognisable. The final
 * name is cut, at a code point boundary, to keep the result within MAX_NAME_BYTES.
 *
 * When two long names are cut to the same prefix their temporary names are the same, so the writer
 * must create the temporary file exclusively (flag "wx") rather than rely on this name being unique.
 */
export function temporaryNameFor(finalName: string, transferId: string): string {
  if (checkReceivedPath(finalName).length !== 1) refuse(finalName, 'is a path, not a single file name');
  // The id is only a label; keeping it to [A-Za-z0-9_-] means it can never make the name unsafe.
  const tail = `.${transferId.replace(/[^A-Za-z0-9_-]/g, '').slice(0, 12)}${TEMP_SUFFIX}`;
  // A prefix of an NFC string is NFC, and "." starts and ends the cut part, so the result passes
  // checkReceivedPath: no trailing dot or space, and never a device name (it starts with ".").
  return `.${truncateUtf8(finalName, MAX_NAME_BYTES - 1 - utf8Bytes(tail))}${tail}`;
}

function isWindowsDevice(component: string): boolean {
  // Windows ignores everything from the first dot, and spaces before it: "nul .txt" is NUL too.
  const base = component.split('.')[0]!.trimEnd().toUpperCase();
  return WINDOWS_DEVICES.has(base);
}

/**
 * `name (n).ext`, as browsers number a download whose name is taken, with the stem cut (never the
 * extension, unless it alone is too long) so that the result fits a file name's 255 bytes.
 */
export function numberedName(name: string, n: number): string {
  const ext = path.extname(name);
  const stem = name.slice(0, name.length - ext.length);
  const tail = ` (${n})${utf8Bytes(ext) <= 32 ? ext : ''}`;
  return `${truncateUtf8(stem, MAX_NAME_BYTES - utf8Bytes(tail))}${tail}`;
}

function utf8Bytes(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/** The longest prefix of text that fits in maxBytes of UTF-8, never splitting a code point. */
function truncateUtf8(text: string, maxBytes: number): string {
  let bytes = 0;
  let end = 0;
  for (const char of text) {
    bytes += utf8Bytes(char);
    if (bytes > maxBytes) break;
    end += char.length;
  }
  return text.slice(0, end);
}

function unicodeEscape(char: string): string {
  return `\\u{${char.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}}`;
}

function refuse(name: string, why: string): never {
  throw new SftError('UNSAFE_NAME', `Refused the name "${escapeForDisplay(name)}": it ${why}.`);
}

function refuseBoth(first: string, second: string, why: string): never {
  throw new SftError(
    'UNSAFE_NAME',
    `Refused the names "${escapeForDisplay(first)}" and "${escapeForDisplay(second)}": ${why}.`,
  );
}
