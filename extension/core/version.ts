/**
 * The package's version, written in by the bundler (`esbuild.js` defines `SFT_VERSION` from
 * package.json), and the wire protocol's. Code run from source (the tests under tsx) has no
 * bundle and reports `dev`.
 */
import { PROTOCOL_VERSION } from './protocol';

declare const SFT_VERSION: string | undefined;

export const VERSION: string = typeof SFT_VERSION === 'string' ? SFT_VERSION : 'dev';

/** What `sft --version` and `sft-relay --version` print. */
export const versionLine = (): string => `${VERSION} (protocol ${PROTOCOL_VERSION})`;
