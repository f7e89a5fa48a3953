/**
 * A real VS Code for the extension's tests: code-server (VS Code's own server and workbench) on
 * Node 24, driven by Chromium through playwright-core. Runs with no internet.
 *
 * Two uses:
 * - runExtensionSuite(): an extension-host test suite (a module exporting `run()`, the same module
 *   `@vscode/test-electron` runs), with the extension loaded from its development path.
 * - startCodeServer() + launchBrowser() + openWindow(): UI tests that do what a person does, with
 *   the helpers at the bottom of this file and a screenshot at each step.
 *
 * Every server gets a fresh temporary folder for all of its state (HOME, XDG_*, user data,
 * extensions), so tests neither see nor touch the user's VS Code, nor each other.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import util from 'node:util';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';
import { HOST_DIR, playwright, type Browser, type BrowserContext, type Locator, type Page } from './playwright';
import { freePort } from '../../scripts/free-port';

export type { Browser, BrowserContext, Locator, Page } from './playwright';

interface HostPaths {
  hostDir: string;
  node: string;
  codeServer: string;
  vscodeDir: string;
  chromium: string;
}

/** ensure.mjs: installs test/host when needed (plain ESM, so it also runs before anything is installed). */
export async function ensureHost(): Promise<HostPaths> {
  const ensure = (await import(pathToFileURL(path.join(HOST_DIR, 'ensure.mjs')).href)) as { ensureHost(): Promise<HostPaths> };
  return ensure.ensureHost();
}

export interface StartOptions {
  /** Start with VS Code's smoke-test driver, which the extension-test payload needs. Notification toasts are then not drawn. */
  smoke?: boolean;
  /** User settings, merged over the quiet defaults below. */
  settings?: Record<string, unknown>;
  /** Added to code-server's environment; its extension host inherits it. */
  env?: Record<string, string>;
  /** A .vsix to install into this server's extensions folder before it starts. */
  installVsix?: string;
  /** Appears in the temporary folder's name, to tell servers apart. */
  name?: string;
}

export interface CodeServer {
  /** http://127.0.0.1:PORT, no trailing slash. */
  readonly url: string;
  readonly port: number;
  /** code-server's process id (the leader of its process group). */
  readonly pid: number;
  /** The temporary folder that holds all of this server's state; removed by stop(). */
  readonly root: string;
  readonly userDataDir: string;
  readonly extensionsDir: string;
  /** code-server's stdout and stderr, line by line. */
  readonly log: string[];
  /** Stops code-server and everything it started, and removes `root`. Safe to call twice. */
  stop(): Promise<void>;
}

const QUIET_SETTINGS: Record<string, unknown> = {
  'telemetry.telemetryLevel': 'off',
  'workbench.startupEditor': 'none',
  'workbench.tips.enabled': false,
  'workbench.secondarySideBar.defaultVisibility': 'hidden',
  'workbench.enableExperiments': false,
  'extensions.autoUpdate': false,
  'extensions.autoCheckUpdates': false,
  'extensions.ignoreRecommendations': true,
  'update.mode': 'none',
  'security.workspace.trust.enabled': false,
  'chat.disableAIFeatures': true,
  'git.enabled': false,
};

/**
 * Servers not yet stopped. Each runs in its own process group, so a Ctrl-C aimed at the tests does
 * not reach it: they are killed when this process exits, or is interrupted, without stopping them.
 */
const running = new Set<{ pid: number; root: string }>();
function killAllRunning(): void {
  for (const server of running) {
    killTree(server.pid, 'SIGKILL');
    fs.rmSync(server.root, { recursive: true, force: true });
  }
  running.clear();
}
process.once('exit', killAllRunning);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  const onSignal = () => {
    killAllRunning();
    // Then die of the signal as if nobody had listened.
    process.removeListener(signal, onSignal);
    process.kill(process.pid, signal);
  };
  process.on(signal, onSignal);
}

/**
 * Descendants of `pid`, from /proc. Terminals started through node-pty get a session of their
 * own, so killing code-server's process group alone would leave them behind.
 */
function descendants(pid: number): number[] {
  let children: Map<number, number[]>;
  try {
    children = new Map();
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      let stat: string;
      try {
        stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      } catch {
        continue;
      }
      // The command name in parentheses may itself contain spaces or parentheses.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    }
  } catch {
    return []; // No /proc (macOS): the process group has to do.
  }
  const found: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    for (const child of children.get(queue.shift()!) ?? []) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
}

function killTree(pid: number, signal: NodeJS.Signals): void {
  const stragglers = descendants(pid);
  try {
    process.kill(-pid, signal);
  } catch {
    // The group is already gone.
  }
  for (const child of stragglers) {
    try {
      process.kill(child, signal);
    } catch {
      // Already gone.
    }
  }
}

/** The caller's environment without what would make code-server talk to another VS Code (it forwards to one when it runs inside its terminal). */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined || key.startsWith('VSCODE_') || key === 'ELECTRON_RUN_AS_NODE') continue;
    env[key] = value;
  }
  return env;
}

async function waitForHealth(url: string, child: ChildProcess, log: string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`code-server exited (${child.signalCode ?? child.exitCode}) before it answered /healthz:\n${log.slice(-30).join('\n')}`);
    }
    try {
      const response = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
      if (response.ok) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`code-server did not answer ${url}/healthz within ${timeoutMs} ms:\n${log.slice(-30).join('\n')}`);
}

export async function startCodeServer(opts: StartOptions = {}): Promise<CodeServer> {
  const host = await ensureHost();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `sft-vscode-${(opts.name ?? 'host').replace(/[^\w.-]/g, '_')}-`));
  try {
    const dir = (name: string) => {
      const full = path.join(root, name);
      fs.mkdirSync(full, { recursive: true });
      return full;
    };
    const userDataDir = dir('user-data');
    const extensionsDir = dir('extensions');
    fs.mkdirSync(path.join(userDataDir, 'User'), { recursive: true });
    fs.writeFileSync(path.join(userDataDir, 'User', 'settings.json'), JSON.stringify({ ...QUIET_SETTINGS, ...opts.settings }, null, 2));
    const env: Record<string, string> = {
      ...baseEnv(),
      HOME: dir('home'),
      XDG_DATA_HOME: dir('xdg-data'),
      XDG_CONFIG_HOME: dir('xdg-config'),
      XDG_CACHE_HOME: dir('xdg-cache'),
      // No marketplace: nothing to look up, nothing to wait for.
      EXTENSIONS_GALLERY: '{}',
      ...opts.env,
    };
    const stateArgs = ['--user-data-dir', userDataDir, '--extensions-dir', extensionsDir];

    if (opts.installVsix) {
      const install = spawnSync(host.node, [host.codeServer, ...stateArgs, '--install-extension', path.resolve(opts.installVsix)], { env, encoding: 'utf8', timeout: 120_000 });
      if (install.status !== 0) {
        throw new Error(`code-server --install-extension ${opts.installVsix} failed (${install.error?.message ?? install.status}):\n${install.stdout}\n${install.stderr}`);
      }
    }

    // The port is free when we ask and taken when code-server binds, unless someone else is quicker; then try another.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const url = `http://127.0.0.1:${port}`;
      const args = [
        host.codeServer,
        '--auth', 'none',
        '--bind-addr', `127.0.0.1:${port}`,
        '--disable-telemetry',
        '--disable-update-check',
        '--disable-workspace-trust',
        '--disable-getting-started-override',
        '--ignore-last-opened',
        ...stateArgs,
        // Without the smoke-test driver the workbench silently ignores an extension-test payload.
        ...(opts.smoke ? ['--vscode-option', 'enable-smoke-test-driver'] : []),
      ];
      const child = spawn(host.node, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      const entry = { pid: child.pid!, root };
      running.add(entry);
      const log: string[] = [];
      const keep = (line: string) => {
        log.push(line);
        if (log.length > 5000) log.splice(0, 1000);
      };
      readline.createInterface({ input: child.stdout! }).on('line', keep);
      readline.createInterface({ input: child.stderr! }).on('line', keep);
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

      let stopped: Promise<void> | undefined;
      const stop = () =>
        (stopped ??= (async () => {
          if (child.exitCode === null && child.signalCode === null) {
            killTree(child.pid!, 'SIGTERM');
            const gone = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 2000))]);
            // code-server's children may outlive it briefly; the group gets no second chance.
            killTree(child.pid!, 'SIGKILL');
            if (!gone) await exited;
          }
          running.delete(entry);
          fs.rmSync(root, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
        })());

      try {
        await waitForHealth(url, child, log, 60_000);
        return { url, port, pid: child.pid!, root, userDataDir, extensionsDir, log, stop };
      } catch (error) {
        const portTaken = log.some((line) => line.includes('EADDRINUSE'));
        if (child.exitCode === null && child.signalCode === null) killTree(child.pid!, 'SIGKILL');
        await exited;
        running.delete(entry);
        if (!portTaken || attempt >= 3) throw error;
      }
    }
  } catch (error) {
    fs.rmSync(root, { recursive: true, force: true });
    throw error;
  }
}

/**
 * The extension hosts `server` runs (one per connected window), by process id, from /proc: what a
 * test kills to see what a crashed extension host leaves behind. Linux only; empty elsewhere.
 */
export function extensionHostPids(server: CodeServer): number[] {
  return descendants(server.pid).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('--type=extensionHost');
    } catch {
      return false;
    }
  });
}

function isLoopback(url: string): boolean {
  try {
    const { protocol, hostname } = new URL(url);
    if (protocol === 'data:' || protocol === 'blob:') return true;
    return hostname === '127.0.0.1' || hostname === 'localhost' || hostname === '[::1]';
  } catch {
    return false;
  }
}

/** Chromium from ensure.mjs (SFT_CHROMIUM, or the first Chromium/Chrome on the PATH), headless. */
export async function launchBrowser(): Promise<Browser> {
  const host = await ensureHost();
  return playwright().chromium.launch({
    executablePath: host.chromium,
    headless: process.env.SFT_HEADED !== '1',
    args: ['--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check'],
  });
}

/** Requests the workbench tried to make off this machine; a test may assert there were none. */
export const blockedRequests: string[] = [];

/** A fresh browser profile in which every request that is not to this machine fails. */
export async function newContext(browser: Browser): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  await context.route(
    (url) => !isLoopback(url.href),
    (route) => {
      blockedRequests.push(route.request().url());
      return route.abort('blockedbyclient');
    },
  );
  return context;
}

/** How the window addresses a file on the server's machine. */
function remoteUri(server: CodeServer, file: string): string {
  return `vscode-remote://127.0.0.1:${server.port}${path.resolve(file)}`;
}

/** `?folder=…`, plus the payload that carries development/test paths (honoured only under the smoke-test driver). */
function windowUrl(server: CodeServer, folder: string, payload: [string, string][]): string {
  const query = `folder=${encodeURIComponent(path.resolve(folder))}`;
  return `${server.url}/?${query}${payload.length > 0 ? `&payload=${encodeURIComponent(JSON.stringify(payload))}` : ''}`;
}

export interface WindowOptions {
  /** Load an extension from this folder, as F5 does; needs a server started with `smoke: true`. */
  extensionDevelopmentPath?: string;
  timeoutMs?: number;
}

/** Opens `folder` in a new window (its own browser context); resolves once the workbench is drawn. */
export async function openWindow(browser: Browser, server: CodeServer, folder: string, opts: WindowOptions = {}): Promise<Page> {
  const context = await newContext(browser);
  const page = await context.newPage();
  const payload: [string, string][] = opts.extensionDevelopmentPath ? [['extensionDevelopmentPath', remoteUri(server, opts.extensionDevelopmentPath)]] : [];
  await page.goto(windowUrl(server, folder, payload));
  await page.locator('.monaco-workbench').waitFor({ state: 'visible', timeout: opts.timeoutMs ?? 60_000 });
  return page;
}

export interface SuiteOptions {
  /** The extension's folder: its package.json and the `main` it names. */
  extensionPath: string;
  /** The suite entry: a CommonJS module exporting `run(): Promise<void>`; a rejection fails the run. */
  testsPath: string;
  /** The folder the window opens. */
  workspace: string;
  /** Added to the environment of code-server and so of the extension host and the suite. */
  env?: Record<string, string>;
  /** Default 180 s. */
  timeoutMs?: number;
  /** Where to put a screenshot of the window when the run fails. */
  screenshotDir?: string;
  settings?: Record<string, unknown>;
}

export interface SuiteResult {
  /** VS Code's verdict: 0 when run() resolved, 1 when it threw. */
  code: number;
  /** What the extension host and the suite logged (console.log and friends), one entry per call. */
  log: string[];
  /** code-server's own output. */
  serverLog: string[];
  /** Set when the run failed and screenshotDir was given. */
  screenshot?: string;
}

/**
 * Runs an extension-host test suite in a fresh code-server and browser, the way
 * `@vscode/test-electron` runs it in desktop VS Code. Resolves with the exit code VS Code reports;
 * rejects (with the logs in the message) when the run never reports one. Stops everything in both cases.
 */
export async function runExtensionSuite(opts: SuiteOptions): Promise<SuiteResult> {
  const timeoutMs = opts.timeoutMs ?? 180_000;
  const server = await startCodeServer({ smoke: true, env: opts.env, settings: opts.settings, name: path.basename(opts.testsPath).replace(/\.[cm]?js$/, '') });
  let browser: Browser | undefined;
  let page: Page | undefined;
  const log: string[] = [];
  const result = (code: number, screenshot?: string): SuiteResult => ({ code, log, serverLog: [...server.log], ...(screenshot ? { screenshot } : {}) });
  let shot: Promise<string | undefined> | undefined;
  // One picture per failed run, however it failed.
  const failShot = () =>
    (shot ??= opts.screenshotDir && page && !page.isClosed() ? screenshot(page, opts.screenshotDir, 'suite-failed').catch(() => undefined) : Promise.resolve(undefined));
  try {
    browser = await launchBrowser();
    page = await (await newContext(browser)).newPage();
    page.on('pageerror', (error) => log.push(`[page error] ${error.message}`));
    let reportExit!: (code: number) => void;
    const exited = new Promise<number>((resolve) => (reportExit = resolve));
    // Both must exist before the workbench loads: it looks for them once, at start.
    await page.exposeFunction('codeAutomationExit', (code: number) => reportExit(Number(code)));
    await page.exposeFunction('codeAutomationLog', (type: string, args: unknown[]) => {
      // The host forwards console calls with their arguments: apply printf-style formats as Node's console would.
      const text = util.format(...(Array.isArray(args) ? args : [args]));
      log.push(type === 'log' || type === 'info' ? text : `[${type}] ${text}`);
    });
    await page.goto(
      windowUrl(server, opts.workspace, [
        ['extensionDevelopmentPath', remoteUri(server, opts.extensionPath)],
        ['extensionTestsPath', remoteUri(server, opts.testsPath)],
      ]),
    );

    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
    const outcome = await Promise.race([exited, timedOut]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      const picture = await failShot();
      throw new Error(
        `the suite ${opts.testsPath} reported no exit within ${timeoutMs} ms${picture ? ` (screenshot: ${picture})` : ''}\n` +
          `--- host log ---\n${log.slice(-40).join('\n')}\n--- code-server ---\n${server.log.slice(-40).join('\n')}`,
      );
    }
    return result(outcome, outcome === 0 ? undefined : await failShot());
  } catch (error) {
    await failShot();
    throw error;
  } finally {
    await browser?.close().catch(() => undefined);
    await server.stop();
  }
}

// --- UI helpers: what a person sees and does -------------------------------------------------

/** An Explorer row whose file or folder name is exactly `name`. */
export function explorerRow(page: Page, name: string): Locator {
  const exact = new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
  return page.locator('.explorer-folders-view .monaco-list-row').filter({ has: page.locator('.label-name').filter({ hasText: exact }) });
}

/**
 * Right-clicks `row` and chooses the menu item `name`. Retries: the menu can open before the
 * extensions' contributions to it have loaded, and then the item is simply not there yet.
 */
export async function rightClickMenuItem(page: Page, row: Locator, name: string | RegExp, attempts = 5): Promise<void> {
  let lastError: unknown;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    await closeMenus(page);
    await row.click({ button: 'right' });
    const item = page.locator('.monaco-menu-container').getByRole('menuitem', { name }).first();
    try {
      // On a busy machine the menu itself can take seconds to open.
      await item.waitFor({ state: 'visible', timeout: 2000 * attempt });
      // The workbench ignores a click that lands while the menu is still being laid out.
      await page.waitForTimeout(300);
      await item.click();
      // A taken click closes the menu. Let it fade out by itself: an Escape now would also close
      // whatever the command just opened (a quick pick, a dialog). Still open: the click was lost.
      const closed = await page.locator('.monaco-menu-container').first().waitFor({ state: 'hidden', timeout: 3000 }).then(() => true, () => false);
      if (closed) return;
      lastError = new Error('the menu stayed open after the click');
    } catch (error) {
      lastError = error;
    }
  }
  throw new Error(`no menu item ${String(name)} after ${attempts} right-clicks`, { cause: lastError });
}

/**
 * Closes any open context menu. A menu that opens late (after the Escape meant for it) would
 * otherwise sit over the window and swallow the next click.
 */
export async function closeMenus(page: Page): Promise<void> {
  const menu = page.locator('.monaco-menu-container');
  for (let i = 0; i < 5 && (await menu.count()) > 0 && (await menu.first().isVisible()); i++) {
    await page.keyboard.press('Escape');
    await menu.first().waitFor({ state: 'hidden', timeout: 1000 }).catch(() => undefined);
  }
}

/** Notification toasts as drawn for a user (not drawn at all under the smoke-test driver). */
export function notificationToasts(page: Page): Locator {
  return page.locator('.notifications-toasts .notification-toast');
}

/**
 * The rows of the Notification Center, which it opens first: works with and without the smoke-test
 * driver. The status-bar bell toggles the center, so a click that lands while the center is still
 * opening closes it again (seen once in a fresh-clone CI run): it clicks again until it shows.
 */
export async function notificationRows(page: Page, attempts = 5): Promise<Locator> {
  const center = page.locator('.notifications-center');
  for (let i = 0; i < attempts && !(await center.isVisible()); i++) {
    await closeMenus(page);
    await page.locator('[id="status.notifications"]').click();
    await center.waitFor({ state: 'visible', timeout: 5_000 }).catch(() => undefined);
  }
  await center.waitFor({ state: 'visible' });
  return center.locator('.monaco-list-row');
}

const shotCounters = new Map<string, number>();

/** Saves a numbered screenshot `dir/NN-step.png`, so a reviewer can page through a test in order. */
export async function screenshot(page: Page, dir: string, step: string): Promise<string> {
  fs.mkdirSync(dir, { recursive: true });
  const n = (shotCounters.get(dir) ?? 0) + 1;
  shotCounters.set(dir, n);
  const file = path.join(dir, `${String(n).padStart(2, '0')}-${step.replace(/[^\w.-]+/g, '-')}.png`);
  // Evidence, not an assertion: a page that is busy (a window reloading) must not fail the test.
  await page.screenshot({ path: file, timeout: 10_000 }).catch((error: unknown) => console.warn(`screenshot ${step} skipped: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`));
  return file;
}
