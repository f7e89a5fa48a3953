import type { ErrorCode } from '../core/errors';

/** Exit codes scripts can rely on. */
export const EXIT_CODES = {
  ok: 0,
  failed: 1,
  usage: 2,
  refused: 3, // The relay refused us: token, proof, limits.
  peer: 4, // A recipient is offline or unknown.
  declined: 5,
  security: 6, // An end-to-end check failed: signature, integrity, unsafe name, replay.
  io: 7, // Local files: missing, changed, disk full, name taken.
  network: 8, // Relay unreachable, connection lost, timeout.
} as const;

const EXIT_BY_CODE: Partial<Record<ErrorCode, number>> = {
  PROTOCOL_VERSION: EXIT_CODES.refused,
  UNAUTHORIZED: EXIT_CODES.refused,
  BAD_PROOF: EXIT_CODES.refused,
  JOIN_RATE_LIMITED: EXIT_CODES.refused,
  RATE_LIMITED: EXIT_CODES.refused,
  FILE_TOO_LARGE: EXIT_CODES.refused,
  TOO_MANY_TRANSFERS: EXIT_CODES.refused,
  RELAY_BUSY: EXIT_CODES.refused,
  QUOTA_EXCEEDED: EXIT_CODES.refused,
  RECIPIENT_NOT_ALLOWED: EXIT_CODES.refused,
  NOT_ALLOWED: EXIT_CODES.refused,
  MESSAGE_TOO_LARGE: EXIT_CODES.refused,
  SHUTTING_DOWN: EXIT_CODES.refused,
  PEER_OFFLINE: EXIT_CODES.peer,
  DECLINED: EXIT_CODES.declined,
  BAD_SIGNATURE: EXIT_CODES.security,
  NOT_FOR_ME: EXIT_CODES.security,
  DECRYPT_FAILED: EXIT_CODES.security,
  INTEGRITY: EXIT_CODES.security,
  UNSAFE_NAME: EXIT_CODES.security,
  REPLAYED_OFFER: EXIT_CODES.security,
  FILE_EXISTS: EXIT_CODES.io,
  NO_SPACE: EXIT_CODES.io,
  SOURCE_CHANGED: EXIT_CODES.io,
  IO: EXIT_CODES.io,
  USAGE: EXIT_CODES.usage,
  RELAY_UNREACHABLE: EXIT_CODES.network,
  PEER_GONE: EXIT_CODES.network,
  TIMEOUT: EXIT_CODES.network,
  EXPIRED: EXIT_CODES.network,
};

export function exitCodeFor(code: ErrorCode): number {
  return EXIT_BY_CODE[code] ?? EXIT_CODES.failed;
}
