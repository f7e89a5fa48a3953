/**
 * Text a peer or a relay chose, made safe for VS Code's UI. On top of the core's escaping (control,
 * bidi and invisible characters become visible \u{…} escapes), two things VS Code would otherwise
 * interpret are neutralised: `[label](command:…)`, which notifications turn into clickable command
 * links, and `$(icon)`, which quick picks and status text draw as icons (a fake "verified" badge).
 */
import { escapeForDisplay } from '../core/names';

export function safeText(text: string): string {
  return escapeForDisplay(text).replace(/\[/g, '［').replace(/\]/g, '］').replace(/\$\(/g, '＄(');
}
