/**
 * `sft-relay`: the relay as a program. A thin wrapper over createRelay(): flags and environment
 * variables in, one line with the URL on stdout, structured logs on stderr, clean shutdown on
 * SIGINT/SIGTERM.
 */
import fs from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import pino from 'pino';
import { createRelay } from './relay';
import { parseBytes } from '../extension/core/format';

const integer = (name: string) => (value: string) => {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a whole number.`);
  return n;
};

const bytes = (value: string) => {
  const n = parseBytes(value);
  if (n === undefined) throw new InvalidArgumentError('expected a size such as 500MB, 2GiB or 1048576.');
  return n;
};

const command = new Command('sft-relay')
  .description('Run a Secure File Transfer relay. It routes encrypted transfers between team members and never sees plaintext.')
  .addOption(new Option('--port <port>', 'TCP port (0: any free port)').env('SFT_RELAY_PORT').default(7474).argParser(integer('port')))
  .addOption(new Option('--host <host>', 'address to listen on (0.0.0.0 for every interface)').env('SFT_RELAY_HOST').default('127.0.0.1'))
  .addOption(new Option('--token <tokens>', 'team token(s), comma-separated (prefer SFT_RELAY_TOKEN or --token-file: argv is visible to other users)').env('SFT_RELAY_TOKEN'))
  .addOption(new Option('--token-file <file>', 'read team token(s) from a file, one per line'))
  .addOption(new Option('--max-file-size <size>', 'largest transfer accepted (e.g. 10GB); default unlimited').env('SFT_RELAY_MAX_FILE_SIZE').argParser(bytes))
  .addOption(new Option('--max-transfers-per-client <n>', 'concurrent outgoing transfers per client').env('SFT_RELAY_MAX_TRANSFERS').default(8).argParser(integer('max-transfers-per-client')))
  .addOption(new Option('--window <chunks>', 'chunks in flight per transfer').env('SFT_RELAY_WINDOW').default(16).argParser(integer('window')))
  .addOption(new Option('--audit-log <file>', 'append one JSON line per join and transfer event').env('SFT_RELAY_AUDIT_LOG'))
  .addOption(new Option('--log-level <level>', 'log level').env('SFT_RELAY_LOG_LEVEL').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
  .showHelpAfterError();

command.parse(process.argv);
const options = command.opts<{
  port: number;
  host: string;
  token?: string;
  tokenFile?: string;
  maxFileSize?: number;
  maxTransfersPerClient: number;
  window: number;
  auditLog?: string;
  logLevel: string;
}>();

if (options.token && !process.env.SFT_RELAY_TOKEN) process.stderr.write('warning: --token is visible in the process list; prefer SFT_RELAY_TOKEN or --token-file.\n');
const tokenText = options.tokenFile ? fs.readFileSync(options.tokenFile, 'utf8') : (options.token ?? '');
const tokens = tokenText.split(/[,\n]/).map((t) => t.trim()).filter(Boolean);

// Logs go to stderr so stdout carries only the URL line, which scripts read.
const logger = pino({ level: options.logLevel }, pino.destination(2));
const relay = createRelay({
  host: options.host,
  port: options.port,
  tokens,
  maxFileSize: options.maxFileSize ?? null,
  maxTransfersPerClient: options.maxTransfersPerClient,
  window: options.window,
  logger,
  ...(options.auditLog ? { auditLog: options.auditLog } : {}),
});

relay.start().then(
  (url) => {
    process.stdout.write(`sft-relay listening on ${url}\n`);
    logger.info({ tokens: tokens.length, maxFileSize: options.maxFileSize ?? null, auditLog: options.auditLog ?? null }, tokens.length > 0 ? 'team token required' : 'open relay: no team token set');
  },
  (error: NodeJS.ErrnoException) => {
    process.stderr.write(`sft-relay: could not listen on ${options.host}:${options.port}: ${error.code ?? error.message}\n`);
    process.exit(1);
  },
);

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) process.exit(1);
    stopping = true;
    logger.info({ signal }, 'shutting down');
    relay.stop().then(() => process.exit(0));
  });
}
