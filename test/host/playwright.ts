/**
 * playwright-core, loaded from test/host/node_modules at run time.
 *
 * playwright-core is not a root dependency (test/host keeps its 900 MB out of the root install), so
 * the root type-check cannot see its types: a fresh checkout type-checks before test/host is
 * installed. The interfaces below are the slice of its API these tests use, copied from its
 * types.d.ts; the objects behind them are the real ones. Add a member here when a test needs it.
 */
import { createRequire } from 'node:module';
import path from 'node:path';

export const HOST_DIR = __dirname;

export type Role =
  | 'button' | 'checkbox' | 'dialog' | 'link' | 'list' | 'listitem' | 'menu' | 'menuitem' | 'option'
  | 'tab' | 'textbox' | 'tree' | 'treeitem' | 'row' | 'heading' | 'alert' | 'combobox';

export interface WaitOptions { timeout?: number }
export interface ClickOptions extends WaitOptions { button?: 'left' | 'right' | 'middle'; clickCount?: number; force?: boolean; delay?: number }

export interface Locator {
  click(options?: ClickOptions): Promise<void>;
  dblclick(options?: ClickOptions): Promise<void>;
  hover(options?: WaitOptions): Promise<void>;
  fill(value: string, options?: WaitOptions): Promise<void>;
  press(key: string, options?: WaitOptions): Promise<void>;
  pressSequentially(text: string, options?: WaitOptions & { delay?: number }): Promise<void>;
  waitFor(options?: WaitOptions & { state?: 'attached' | 'detached' | 'visible' | 'hidden' }): Promise<void>;
  count(): Promise<number>;
  isVisible(): Promise<boolean>;
  textContent(options?: WaitOptions): Promise<string | null>;
  innerText(options?: WaitOptions): Promise<string>;
  allInnerTexts(): Promise<string[]>;
  allTextContents(): Promise<string[]>;
  getAttribute(name: string, options?: WaitOptions): Promise<string | null>;
  screenshot(options?: { path?: string; timeout?: number }): Promise<Buffer>;
  locator(selector: string, options?: { hasText?: string | RegExp }): Locator;
  getByRole(role: Role, options?: { name?: string | RegExp; exact?: boolean }): Locator;
  getByText(text: string | RegExp, options?: { exact?: boolean }): Locator;
  getByLabel(text: string | RegExp, options?: { exact?: boolean }): Locator;
  filter(options: { hasText?: string | RegExp; hasNotText?: string | RegExp; has?: Locator }): Locator;
  first(): Locator;
  last(): Locator;
  nth(index: number): Locator;
}

export interface Keyboard {
  press(key: string, options?: { delay?: number }): Promise<void>;
  type(text: string, options?: { delay?: number }): Promise<void>;
  insertText(text: string): Promise<void>;
}

export interface ConsoleMessage { type(): string; text(): string }

export interface Page {
  goto(url: string, options?: WaitOptions & { waitUntil?: 'load' | 'domcontentloaded' | 'networkidle' | 'commit' }): Promise<unknown>;
  exposeFunction(name: string, callback: (...args: never[]) => unknown): Promise<void>;
  locator(selector: string, options?: { hasText?: string | RegExp }): Locator;
  getByRole(role: Role, options?: { name?: string | RegExp; exact?: boolean }): Locator;
  getByText(text: string | RegExp, options?: { exact?: boolean }): Locator;
  getByLabel(text: string | RegExp, options?: { exact?: boolean }): Locator;
  waitForTimeout(ms: number): Promise<void>;
  screenshot(options?: { path?: string; fullPage?: boolean; timeout?: number }): Promise<Buffer>;
  evaluate<R>(fn: () => R | Promise<R>): Promise<R>;
  setDefaultTimeout(ms: number): void;
  on(event: 'console', listener: (message: ConsoleMessage) => void): void;
  on(event: 'pageerror', listener: (error: Error) => void): void;
  url(): string;
  isClosed(): boolean;
  close(): Promise<void>;
  readonly keyboard: Keyboard;
}

export interface Request { url(): string }
export interface Route {
  request(): Request;
  continue(): Promise<void>;
  abort(errorCode?: string): Promise<void>;
}

export interface BrowserContext {
  newPage(): Promise<Page>;
  route(url: string | RegExp | ((url: URL) => boolean), handler: (route: Route) => unknown): Promise<void>;
  setDefaultTimeout(ms: number): void;
  close(): Promise<void>;
}

export interface Browser {
  newContext(options?: { viewport?: { width: number; height: number } | null; acceptDownloads?: boolean }): Promise<BrowserContext>;
  contexts(): BrowserContext[];
  close(): Promise<void>;
}

interface Chromium {
  launch(options: { executablePath: string; headless?: boolean; args?: string[]; env?: Record<string, string> }): Promise<Browser>;
}

let loaded: { chromium: Chromium } | undefined;

/** The real playwright-core; throws a sentence that says what to run when it is not installed. */
export function playwright(): { chromium: Chromium } {
  if (loaded) return loaded;
  const require = createRequire(path.join(HOST_DIR, 'package.json'));
  try {
    loaded = require('playwright-core') as { chromium: Chromium };
  } catch (cause) {
    throw new Error('playwright-core is not installed in test/host: run `node test/host/ensure.mjs` first', { cause });
  }
  return loaded;
}
