/**
 * Files that hold a secret (keys, credentials, a config with a password) are
 * refused when group or others may read or write them (`mode & 0o077`), as ssh
 * refuses such private keys: a secret others can read protects nothing, and a
 * key others can write lets them choose it.
 */
import { statSync } from 'node:fs';
import { ConfigError } from './config-error.ts';

/** Quoted and escaped (no control characters reach a terminal), at most 200 characters. */
export function shownPath(path: string): string {
  const shown = JSON.stringify(path);
  return shown.length > 200 ? `${shown.slice(0, 197)}..."` : shown;
}

/**
 * Throws ConfigError when `path` is accessible by group or others; `what` names it
 * (a config key). A missing file is left to whoever reads it.
 */
export function checkPrivateFile(path: string, what: string): void {
  let mode: number;
  try {
    mode = statSync(path).mode;
  } catch {
    return;
  }
  if ((mode & 0o077) === 0) return;
  const octal = (mode & 0o777).toString(8).padStart(4, '0');
  throw new ConfigError(
    `${what}: ${shownPath(path)} is accessible by group or others (mode ${octal}); a file holding a secret must be private`,
    { hint: `chmod 600 ${shownPath(path)}` },
  );
}
