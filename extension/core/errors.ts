/**
 * Errors are values with a stable code and a human sentence. The user sees the sentence, the log
 * sees the code and the detail. Codes are part of the protocol: the relay sends them to clients,
 * and scripts read them from the command-line client's output and exit code.
 */
export const ErrorCodes = [
  // Joining the relay.
  'RELAY_UNREACHABLE',
  'PROTOCOL_VERSION',
  'UNAUTHORIZED',
  'BAD_PROOF',
  'NOT_JOINED',
  'JOIN_RATE_LIMITED',
  'REPLACED',
  'NOT_ALLOWED',
  // Message-level.
  'BAD_MESSAGE',
  'MESSAGE_TOO_LARGE',
  'RATE_LIMITED',
  // Relay policy.
  'FILE_TOO_LARGE',
  'TOO_MANY_TRANSFERS',
  'RELAY_BUSY',
  'QUOTA_EXCEEDED',
  'RECIPIENT_NOT_ALLOWED',
  'PEER_OFFLINE',
  'UNKNOWN_TRANSFER',
  'DUPLICATE_TRANSFER',
  'NOT_PARTICIPANT',
  'NOT_ACCEPTED',
  'OUT_OF_ORDER',
  'WINDOW_EXCEEDED',
  'SLOW_CONSUMER',
  'SIZE_MISMATCH',
  'SHUTTING_DOWN',
  // Transfer outcomes.
  'DECLINED',
  'CANCELLED',
  'PEER_GONE',
  'TIMEOUT',
  'EXPIRED',
  // End-to-end checks (raised by clients, never by the relay, which cannot see plaintext).
  'BAD_SIGNATURE',
  'NOT_FOR_ME',
  'DECRYPT_FAILED',
  'INTEGRITY',
  'UNSAFE_NAME',
  'REPLAYED_OFFER',
  // Local I/O.
  'FILE_EXISTS',
  'NO_SPACE',
  'SOURCE_CHANGED',
  'IO',
  // What was asked cannot be done as asked: a setting, an argument, a name that matches several
  // peers. Raised by clients for their own user; never sent.
  'USAGE',
  'INTERNAL',
] as const;

export type ErrorCode = (typeof ErrorCodes)[number];

export class SftError extends Error {
  override readonly name = 'SftError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Extra detail for logs. Never shown to the other party; never contains secrets. */
    readonly detail?: unknown,
  ) {
    super(message);
  }

  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && (ErrorCodes as readonly string[]).includes(value);
}

/** Turns anything thrown into an SftError; unknown errors become INTERNAL or IO without leaking detail. */
export function toSftError(error: unknown): SftError {
  if (error instanceof SftError) return error;
  const errno = (error as NodeJS.ErrnoException | undefined)?.code;
  if (errno === 'ENOSPC' || errno === 'EDQUOT') return new SftError('NO_SPACE', 'The disk is full.', error);
  if (errno === 'EEXIST') return new SftError('FILE_EXISTS', 'A file with that name already exists.', error);
  if (typeof errno === 'string' && errno.startsWith('E')) {
    return new SftError('IO', `File system error (${errno}).`, error);
  }
  return new SftError('INTERNAL', 'Something went wrong inside Secure File Transfer.', error);
}
