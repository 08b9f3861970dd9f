/**
 * Reads a 256-bit key file (the snapshot encryption key) and checks it like
 * the rest of the config: every problem is a ConfigError naming the config key
 * (the CLI exits 2).
 *
 * The file holds a 256-bit key as 64 hex digits or base64 (surrounding
 * whitespace and a trailing newline are ignored), or as exactly 32 raw bytes.
 * It is refused when group or others may read or write it (`mode & 0o077`), as
 * ssh refuses such private keys: a key others can read protects nothing, and
 * one others can write lets them choose it. Create one with
 * `(umask 077; openssl rand -hex 32 > snapshot.key)`.
 */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { ConfigError } from './config-error.ts';
import { shownPath } from './private-file.ts';

export const SNAPSHOT_KEY_CONFIG = 'snapshot.encryption_key_file';
const KEY_BYTES = 32;
/** Anything longer is not a key file (and is not read whole). */
const MAX_FILE_BYTES = 1024;
const GENERATE = '(umask 077; openssl rand -hex 32 > snapshot.key)';

/** The key's 32 bytes; throws ConfigError naming `configKey`. */
export function readKeyFile(path: string, configKey: string): Uint8Array {
  const fail = (detail: string, options: { hint?: string; cause?: unknown } = {}): never => {
    throw new ConfigError(`config key "${configKey}": ${shownPath(path)} ${detail}`, {
      hint: `create a key file with ${GENERATE} and set ${configKey} to its path`,
      ...options,
    });
  };
  let fd: number;
  try {
    // Non-blocking: a FIFO named here must not hang the start.
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return fail(code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? String(err)})`, {
      cause: err,
    });
  }
  let content: Buffer;
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return fail('is not a regular file');
    if ((st.mode & 0o077) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
      return fail(`is accessible by group or others (mode ${mode}); a key file must be private`, {
        hint: `chmod 600 ${shownPath(path)}`,
      });
    }
    if (st.size > MAX_FILE_BYTES) return fail(`has ${st.size} bytes: too large to be a key file`);
    content = Buffer.alloc(st.size);
    let read = 0;
    while (read < content.length) {
      const n = readSync(fd, content, read, content.length - read, read);
      if (n === 0) break;
      read += n;
    }
    content = content.subarray(0, read);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    return fail(`cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err });
  } finally {
    closeSync(fd);
  }
  return parseKeyFile(content, fail);
}

function parseKeyFile(content: Buffer, fail: (detail: string) => never): Uint8Array {
  if (content.length === KEY_BYTES) {
    // 32 printable characters are a passphrase, not random bytes (odds of a random key: ~1e-14).
    if (content.every((b) => b >= 0x20 && b < 0x7f))
      return fail(
        'holds 32 printable characters: that is a passphrase, not a key; use 64 hex digits, base64 or 32 random bytes',
      );
    return new Uint8Array(content);
  }
  const text = content.toString('latin1').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return new Uint8Array(Buffer.from(text, 'hex'));
  if (/^[A-Za-z0-9+/]{43}=?$/.test(text) || /^[A-Za-z0-9_-]{43}=?$/.test(text)) {
    const bytes = Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    if (bytes.length === KEY_BYTES) return new Uint8Array(bytes);
  }
  return fail(
    `must hold a 256-bit key (64 hex digits, 44 base64 characters or 32 raw bytes); it has ${content.length} bytes that are none of these`,
  );
}
