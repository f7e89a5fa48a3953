/**
 * `sft-relay`: the relay as a program. A thin wrapper over createRelay(): configuration from a
 * file, SFT_RELAY_* variables and flags (in that order of precedence, lowest first); one line with
 * the URL on stdout; structured logs on stderr; SIGHUP reloads tokens and the allow-list; SIGINT
 * and SIGTERM drain running transfers for the grace period, then stop.
 */
import fs from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import pino from 'pino';
import { createRelay, isLoopbackHost } from './relay';
import { CONFIG_KEYS, ConfigError, envOf, flagOf, loadAllowList, loadTokens, readConfigFile, redacted, validateConfig, type RelayConfig } from './config';
import { versionLine } from '../extension/core/version';
import { keepFreedMemoryForReuse } from '../extension/core/allocator';

keepFreedMemoryForReuse(); // Forwarded chunks reuse freed memory instead of faulting in new pages (allocator.ts).

const HELP: Record<string, string> = {
  host: 'address to listen on (0.0.0.0: every interface) [127.0.0.1]',
  publicUrl: 'URL(s) clients use to reach the relay, comma-separated; join proofs are bound to them',
  port: 'TCP port; 0 picks a free one [7474]',
  token: 'team token(s), comma-separated; prefer SFT_RELAY_TOKEN or --token-file (argv is visible to other users)',
  tokenFile: 'file of team tokens: one per line, "token" or "team token"',
  tlsCert: 'PEM certificate chain: serve https:// and wss://',
  tlsKey: 'PEM private key for --tls-cert',
  maxFileSize: 'largest transfer, e.g. 20GB [unlimited]',
  maxBytesPerClientPerHour: 'bytes a client may send per hour, e.g. 50GB [unlimited]',
  maxTransfersPerClient: 'concurrent outgoing transfers per client [8]',
  maxTransfers: 'concurrent transfers on this relay [unlimited]',
  maxOffersPerClientPerMinute: 'offers a client (peer id) may make per minute [60]',
  maxOffersPerAddressPerMinute: 'offers per minute from one address, all identities together [600]',
  maxJoinsPerPeerPerMinute: 'joins per minute by one peer id, from any address [30]',
  recipients: 'who may send to whom: anyone | same-team [anyone]',
  allowList: 'file of peer ids allowed to join, one per line; reloaded on SIGHUP and on change',
  window: 'chunks in flight per transfer [16]',
  auditLog: 'append one JSON line per event to this file',
  auditMaxBytes: 'rotate the audit log at this size, e.g. 100MB',
  auditKeep: 'rotated audit files to keep [5]',
  metricsPort: 'serve /metrics on this port instead of the main one',
  metricsHost: 'address for --metrics-port [127.0.0.1]',
  shutdownGrace: 'seconds running transfers get to finish on SIGTERM [30]',
  resumeGrace: 'seconds an interrupted transfer may be resumed after a dropped connection [60]',
  logLevel: 'fatal | error | warn | info | debug | trace | silent [info]',
  trustProxy: 'true behind a reverse proxy: client addresses come from X-Forwarded-For [false]',
  clusterHeartbeat: 'seconds between heartbeats of cluster nodes; a node silent for three is taken as dead [5]',
  redis: 'join a cluster of relay nodes through this Redis server, e.g. redis://10.0.0.5:6379 (Redis 7 or newer)',
};

const command = new Command('sft-relay')
  .description('Run a Secure File Transfer relay. It routes encrypted transfers between team members and never sees plaintext.')
  .version(versionLine(), '-V, --version', 'print the version and the protocol version')
  .addOption(new Option('--config <file>', 'JSON or YAML file with any of the settings below').env('SFT_RELAY_CONFIG'))
  .showHelpAfterError();
for (const key of CONFIG_KEYS) command.addOption(new Option(`--${flagOf(key)} <value>`, HELP[key] ?? key).env(envOf(key)));
// A bad flag is a bad setting: exit 2, as for a bad key (systemd's RestartPreventExitStatus=2).
command.exitOverride();
try {
  command.parse(process.argv);
} catch (error) {
  process.exit(error instanceof CommanderError && error.exitCode === 0 ? 0 : 2);
}

function configure(): RelayConfig {
  const flags = command.opts<Record<string, unknown> & { config?: string }>();
  const file = flags.config ? readConfigFile(flags.config) : {};
  const merged: Record<string, unknown> = { ...file };
  for (const key of CONFIG_KEYS) if (flags[key] !== undefined) merged[key] = flags[key];
  const config = validateConfig(merged, flags.config ?? 'settings');
  if (command.getOptionValueSource('token') === 'cli') process.stderr.write('warning: --token is visible in the process list; prefer SFT_RELAY_TOKEN or --token-file.\n');
  if ('token' in file) process.stderr.write(`warning: ${flags.config} holds a token; prefer tokenFile (mode 0600) or SFT_RELAY_TOKEN.\n`);
  // A misspelt variable (SFT_RELAY_TOKENS=…) would otherwise be ignored without a word.
  const known = new Set([...CONFIG_KEYS.map(envOf), 'SFT_RELAY_CONFIG']);
  for (const name of Object.keys(process.env).filter((n) => n.startsWith('SFT_RELAY_') && !known.has(n)).sort()) {
    process.stderr.write(`warning: ${name} is not a setting of sft-relay and is ignored (see sft-relay --help).\n`);
  }
  // The audit trail is a setting like any other: a path that cannot be written stops the relay now,
  // not as an error logged once it runs without a trail.
  if (config.auditLog) {
    try {
      fs.closeSync(fs.openSync(config.auditLog, 'a', 0o600));
    } catch (error) {
      throw new ConfigError(`auditLog: cannot write ${config.auditLog} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  return config;
}

let config: RelayConfig;
let relay: ReturnType<typeof createRelay>;
let logger: pino.Logger;
/** What the relay runs with now, to tell a reload that empties a file from one that never had entries. */
let loaded: { tokens: number; allowList: number };
try {
  config = configure();
  // Logs go to stderr so stdout carries only the URL line, which scripts read.
  logger = pino({ level: config.logLevel }, pino.destination(2));
  const tokens = loadTokens(config);
  const allowList = loadAllowList(config);
  loaded = { tokens: tokens.length, allowList: allowList?.size ?? 0 };
  relay = createRelay({
    host: config.host,
    port: config.port,
    tokens,
    allowList,
    maxFileSize: config.maxFileSize ?? null,
    maxBytesPerClientPerHour: config.maxBytesPerClientPerHour ?? null,
    maxTransfersPerClient: config.maxTransfersPerClient,
    maxTransfers: config.maxTransfers ?? null,
    offersPerClientPerMinute: config.maxOffersPerClientPerMinute,
    offersPerAddressPerMinute: config.maxOffersPerAddressPerMinute,
    joinsPerPeerPerMinute: config.maxJoinsPerPeerPerMinute,
    recipients: config.recipients,
    trustProxy: config.trustProxy,
    resumeGraceMs: Math.round(config.resumeGrace * 1000),
    ...(config.publicUrl ? { publicUrls: config.publicUrl.split(',').map((u) => u.trim()) } : {}),
    window: config.window,
    ...(config.redis ? { redis: config.redis, clusterHeartbeatMs: Math.round(config.clusterHeartbeat * 1000) } : {}),
    logger,
    ...(config.tlsCert && config.tlsKey ? { tls: { cert: fs.readFileSync(config.tlsCert), key: fs.readFileSync(config.tlsKey) } } : {}),
    ...(config.auditLog ? { auditLog: config.auditLog, auditKeep: config.auditKeep } : {}),
    ...(config.auditMaxBytes !== undefined ? { auditMaxBytes: config.auditMaxBytes } : {}),
    ...(config.metricsPort !== undefined ? { metricsPort: config.metricsPort, metricsHost: config.metricsHost } : {}),
  });
} catch (error) {
  const message = error instanceof ConfigError ? error.message : error instanceof Error ? error.message : String(error);
  process.stderr.write(`sft-relay: configuration error: ${message}\n`);
  process.exit(2);
}

relay.start().then(
  (url) => {
    process.stdout.write(`sft-relay listening on ${url}\n`);
    logger.info({ config: redacted(config), tokens: loaded.tokens, metrics: relay.metricsUrl ?? `${url}/metrics` }, 'effective configuration');
    if (loaded.tokens === 0) logger.warn({ host: config.host }, 'no team token is set: this relay admits anyone who can reach it');
    // Without publicUrl a join proof is checked against the Host header the connection names,
    // which a relay in the middle chooses: only a relay for this machine alone can do without it.
    if (!config.publicUrl && !isLoopbackHost(config.host)) {
      logger.warn({ host: config.host }, 'publicUrl is not set: join proofs are bound only to the Host header each client sends; set publicUrl to the address teammates dial');
    }
  },
  (error: NodeJS.ErrnoException & { port?: number }) => {
    if (config.redis && !error.syscall?.startsWith('listen')) {
      process.stderr.write(`sft-relay: could not reach redis at ${redacted(config).redis as string}: ${error.code ?? error.message}\n`);
      process.exit(1);
    }
    const metricsPort = config.metricsPort !== undefined && error.port === config.metricsPort;
    const where = metricsPort ? `the metrics port ${config.metricsHost}:${config.metricsPort}` : `${config.host}:${config.port}`;
    process.stderr.write(`sft-relay: could not listen on ${where}: ${error.code ?? error.message}\n`);
    process.exit(1);
  },
);

/**
 * Re-reads tokens and the allow-list, each on its own: a file that cannot be read is reported and
 * its previous settings kept, without holding back the other (a peer removed from the allow-list
 * is removed even while the token file is being rewritten).
 */
async function reload(why: string): Promise<void> {
  const update: Parameters<typeof relay.reload>[0] = {};
  const kept: string[] = [];
  // An emptied file is far more often a mistake, or a file caught halfway through being
  // rewritten, than a wish to open the relay to anyone (no tokens) or to shut everyone out (an
  // empty allow-list): both take a restart.
  try {
    const tokens = loadTokens(config);
    if (tokens.length === 0 && loaded.tokens > 0) throw new Error('the token list is now empty; to run without tokens, restart the relay');
    update.tokens = tokens;
  } catch (error) {
    kept.push((error as Error).message);
  }
  if (config.allowList) {
    try {
      const allowList = loadAllowList(config);
      if (allowList?.size === 0 && loaded.allowList > 0) throw new Error('the allow-list is now empty; to admit nobody, stop the relay');
      update.allowList = allowList;
    } catch (error) {
      kept.push((error as Error).message);
    }
  }
  try {
    await relay.reload(update);
  } catch (error) {
    logger.error({ why, error: (error as Error).message }, 'reload failed; keeping the previous settings');
    return;
  }
  loaded = { tokens: update.tokens?.length ?? loaded.tokens, allowList: update.allowList === undefined ? loaded.allowList : (update.allowList?.size ?? 0) };
  const applied = [...(update.tokens ? ['tokens'] : []), ...(update.allowList !== undefined ? ['allow-list'] : [])];
  if (kept.length > 0) logger.error({ why, error: kept.join('; '), applied }, 'reload failed; keeping the previous settings');
  else logger.info({ why, tokens: loaded.tokens, allowList: update.allowList?.size ?? null }, 'reloaded tokens and allow-list');
}

process.on('SIGHUP', () => void reload('SIGHUP'));
if (config.allowList) fs.watchFile(config.allowList, { interval: 1000 }, () => void reload('allow-list changed'));

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) process.exit(1); // A second signal: stop now.
    stopping = true;
    logger.info({ signal, graceSeconds: config.shutdownGrace }, 'shutting down');
    if (config.allowList) fs.unwatchFile(config.allowList);
    relay.stop({ graceMs: config.shutdownGrace * 1000 }).then(() => process.exit(0));
  });
}
