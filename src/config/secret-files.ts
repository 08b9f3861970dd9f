import type { Config } from './config.ts';
import { checkPrivateFile } from './private-file.ts';
import { errorMessage } from '../error-message.ts';

/** A URL with a password in it (`sftp://user:pass@host/`). */
function hasPassword(url: string): boolean {
  try {
    return new URL(url).password !== '';
  } catch {
    return false;
  }
}

/**
 * Refuses (ConfigError, "chmod 600 FILE") every file of `config` that holds a secret
 * and that group or others may access: the NATS credentials, seed and TLS key and
 * the SFTP private key. (The snapshot key file is checked by SnapshotKey.load.)
 */
export function checkSecretFiles(config: Config): void {
  const n = config.nats;
  const s = config.snapshot;
  const files: [string, string][] = [
    ['nats.creds_file', n.creds_file],
    ['nats.seed_file', n.seed_file],
    ['nats.key_file', n.key_file],
    ['nats.route_key_file', n.route_key_file],
    ['snapshot.sftp.private_key', s.sftp.private_key],
  ];
  for (const [key, path] of files) if (path !== '') checkPrivateFile(path, `config key "${key}"`);
}

/**
 * The warning for a config file that holds a password, token or secret and that
 * group or others may read, or undefined. A warning, not a refusal: HarmonyLite's
 * own example configs hold passwords and ship readable, and must start unchanged.
 */
export function configFileWarning(config: Config, configPath: string): string | undefined {
  const n = config.nats;
  const s = config.snapshot;
  const secrets = [
    n.user_password !== '' && 'nats.user_password',
    n.token !== '' && 'nats.token',
    s.s3.secret !== '' && 'snapshot.s3.secret',
    s.s3.session_token !== '' && 'snapshot.s3.session_token',
    hasPassword(s.webdav.url) && 'snapshot.webdav.url',
    hasPassword(s.sftp.url) && 'snapshot.sftp.url',
  ].filter((k): k is string => k !== false);
  if (secrets.length === 0) return undefined;
  try {
    checkPrivateFile(configPath, `config file (it holds ${secrets.join(', ')})`);
    return undefined;
  } catch (err) {
    return `${errorMessage(err)}; run chmod 600 on it`;
  }
}
