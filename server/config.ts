/**
 * The relay's configuration: one schema for the config file (JSON or YAML), the flags and the
 * SFT_RELAY_* environment variables. Later sources win: file < environment < flags. Validation
 * names every bad key; the effective configuration is logged with secrets redacted.
 */
import fs from 'node:fs';
import { z } from 'zod';
import YAML from 'yaml';
import { parseBytes } from '../extension/core/format';
import { DEFAULT_CHUNK_SIZE, layoutFor } from '../extension/core/crypto/stream';
import { PEER_ID_PATTERN } from '../extension/core/crypto/identity';
import type { TeamToken } from './relay';

// Signed too, so that -1 is refused as a negative number rather than as "not a number".
const wholeNumber = z.preprocess((v) => (typeof v === 'string' && /^[-+]?\d+$/.test(v.trim()) ? Number(v) : v), z.number().int().nonnegative());
const size = z.preprocess((v) => (typeof v === 'string' ? (parseBytes(v) ?? v) : v), z.number({ error: 'expected a size such as 500MB, 2GiB or 1048576' }).int().nonnegative());
const seconds = z.preprocess((v) => (typeof v === 'string' && v.trim() !== '' ? Number(v) : v), z.number().nonnegative());

export const RelayConfigSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    /** Comma-separated URLs clients use to reach the relay (join proofs are bound to them). */
    publicUrl: z
      .string()
      .refine((v) => v.split(',').every((u) => URL.canParse(u.trim())), 'expected URLs such as https://relay.example.com')
      .optional(),
    port: wholeNumber.pipe(z.number().max(65535)).default(7474),
    /** Inline tokens: comma-separated in the environment; prefer tokenFile in files. */
    token: z.string().optional(),
    tokenFile: z.string().optional(),
    tlsCert: z.string().optional(),
    tlsKey: z.string().optional(),
    // Leave a limit unset for none: 0 would refuse every offer.
    maxFileSize: size.pipe(z.number().positive({ error: 'must be more than 0 (leave it unset for no limit)' })).optional(),
    maxBytesPerClientPerHour: size.pipe(z.number().positive({ error: 'must be more than 0 (leave it unset for no limit)' })).optional(),
    maxTransfersPerClient: wholeNumber.pipe(z.number().min(1)).default(8),
    maxTransfers: wholeNumber.pipe(z.number().min(1)).optional(),
    maxOffersPerClientPerMinute: wholeNumber.pipe(z.number().min(1)).default(60),
    maxOffersPerAddressPerMinute: wholeNumber.pipe(z.number().min(1)).default(600),
    maxJoinsPerPeerPerMinute: wholeNumber.pipe(z.number().min(1)).default(30),
    recipients: z.enum(['anyone', 'same-team']).default('anyone'),
    allowList: z.string().optional(),
    window: wholeNumber.pipe(z.number().min(1).max(1024)).default(16),
    auditLog: z.string().optional(),
    auditMaxBytes: size.pipe(z.number().positive({ error: 'must be more than 0' })).optional(),
    auditKeep: wholeNumber.default(5),
    metricsPort: wholeNumber.pipe(z.number().max(65535)).optional(),
    metricsHost: z.string().min(1).default('127.0.0.1'),
    shutdownGrace: seconds.default(30),
    resumeGrace: seconds.pipe(z.number().max(86_400)).default(60),
    trustProxy: z.preprocess((v) => (v === 'true' ? true : v === 'false' ? false : v), z.boolean()).default(false),
    /** Join a cluster of relay nodes through this Redis server (redis:// or rediss://). */
    redis: z
      .string()
      .refine((v) => URL.canParse(v) && ['redis:', 'rediss:'].includes(new URL(v).protocol), 'expected a URL such as redis://127.0.0.1:6379 or rediss://user:password@host:6380')
      .optional(),
    /** Seconds between a cluster node's heartbeats; silent for three, a node is taken as dead. */
    clusterHeartbeat: seconds.pipe(z.number().min(0.1).max(3600)).default(5),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .strict()
  .refine((c) => (c.tlsCert === undefined) === (c.tlsKey === undefined), { message: 'tlsCert and tlsKey go together', path: ['tlsCert'] })
  // The budget is charged in ciphertext: the file plus a 16-byte tag per chunk of at most 1 MiB.
  .refine((c) => c.maxBytesPerClientPerHour === undefined || c.maxFileSize === undefined || c.maxBytesPerClientPerHour >= cipherBytesOf(c.maxFileSize), {
    message: 'must be at least maxFileSize plus its encryption overhead (16 bytes per MiB), or the largest allowed file could never be sent',
    path: ['maxBytesPerClientPerHour'],
  });

/** The most ciphertext a payload of `plainBytes` can take: one tag per chunk of the smallest default size. */
function cipherBytesOf(plainBytes: number): number {
  return layoutFor(plainBytes, DEFAULT_CHUNK_SIZE).cipherBytes;
}

export type RelayConfig = z.infer<typeof RelayConfigSchema>;
export type RelayConfigKey = keyof z.input<typeof RelayConfigSchema>;

/** Every key, for building flags (--max-file-size) and variables (SFT_RELAY_MAX_FILE_SIZE). */
export const CONFIG_KEYS = Object.keys(RelayConfigSchema.shape) as RelayConfigKey[];
export const flagOf = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
export const envOf = (key: string) => `SFT_RELAY_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`${file}: cannot read (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let parsed: unknown;
  try {
    parsed = YAML.parse(text); // YAML is a superset of JSON, so one parser reads both.
  } catch (error) {
    throw new ConfigError(`${file}: not valid YAML or JSON: ${(error as Error).message.split('\n')[0]}`);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(`${file}: expected a mapping of keys to values`);
  return parsed as Record<string, unknown>;
}

/** Validates merged settings; the error lists every bad key. */
export function validateConfig(raw: Record<string, unknown>, source: string): RelayConfig {
  const result = RelayConfigSchema.safeParse(raw);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    if (issue.code === 'unrecognized_keys') return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
    return `${issue.path.join('.') || '(top level)'}: ${issue.message}`;
  });
  throw new ConfigError(`${source}: ${problems.join('; ')}`);
}

/** Tokens from the environment/flag (comma-separated) and the token file ("token" or "team token" per line). */
export function loadTokens(config: RelayConfig): TeamToken[] {
  const tokens: TeamToken[] = (config.token ?? '').split(',').map((t) => t.trim()).filter(Boolean);
  if (config.tokenFile) {
    for (const line of readLines(config.tokenFile)) {
      const fields = line.split(/\s+/);
      if (fields.length === 1) tokens.push(fields[0]!);
      else if (fields.length === 2) tokens.push({ team: fields[0]!, token: fields[1]! });
      else throw new ConfigError(`${config.tokenFile}: each line is "token" or "team token"`);
    }
  }
  return tokens;
}

/** The allow-list file: one peer id per line. */
export function loadAllowList(config: RelayConfig): Set<string> | null {
  if (!config.allowList) return null;
  const ids = readLines(config.allowList);
  const bad = ids.filter((id) => !PEER_ID_PATTERN.test(id));
  if (bad.length > 0) throw new ConfigError(`${config.allowList}: not peer ids: ${bad.slice(0, 3).join(', ')}`);
  return new Set(ids);
}

function readLines(file: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`${file}: cannot read (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return text
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean);
}

/** The configuration as it may be logged: secrets replaced by a mark. */
export function redacted(config: RelayConfig): Record<string, unknown> {
  const redis = config.redis ? new URL(config.redis) : undefined;
  if (redis?.password) redis.password = 'redacted';
  return { ...config, ...(config.token ? { token: '[redacted]' } : {}), ...(redis ? { redis: redis.href } : {}) };
}
