import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { checkKnownHosts, normalizeFingerprint, sshFingerprint } from './known-hosts.ts';
import { errorMessage } from '../../error-message.ts';

/** Which SSH host keys a store trusts (`[snapshot.sftp] known_hosts`, `host_fingerprint`, `insecure_ignore_host_key`). */
export interface HostKeyPolicy {
  readonly host: string;
  readonly port: number;
  /** OpenSSH known_hosts file. Default: ~/.ssh/known_hosts when no fingerprint is set either. */
  readonly knownHostsPath?: string | undefined;
  /** "SHA256:<base64>" as `ssh-keygen -lf` prints it (padding and prefix optional). */
  readonly hostFingerprint?: string | undefined;
  /** Trust any key. */
  readonly insecureIgnoreHostKey?: boolean | undefined;
}

/**
 * Decides whether the server's host `key` (SSH wire-format blob) is trusted:
 * undefined when it is (it matches the fingerprint or a known_hosts entry),
 * else why not, for an error naming the presented fingerprint and what to
 * configure. A changed key is reported as such, not as unknown.
 */
export function verifyHostKey(
  key: Buffer,
  policy: HostKeyPolicy,
): { reason: string; cause?: unknown } | undefined {
  if (policy.insecureIgnoreHostKey) return undefined;
  const fingerprint = sshFingerprint(key);
  const expected = policy.hostFingerprint ? normalizeFingerprint(policy.hostFingerprint) : undefined;
  if (expected === fingerprint) return undefined;
  const where = policy.port === 22 ? policy.host : `[${policy.host}]:${policy.port}`;
  const knownHostsPath =
    policy.knownHostsPath || (expected ? undefined : join(homedir(), '.ssh', 'known_hosts'));
  let verdict = 'unknown';
  if (knownHostsPath !== undefined) {
    let content = '';
    try {
      content = readFileSync(knownHostsPath, 'utf8');
    } catch (err) {
      // A missing default file just means "nothing known"; a configured one must be readable.
      if (policy.knownHostsPath) {
        return { reason: `cannot read known_hosts ${knownHostsPath}: ${errorMessage(err)}`, cause: err };
      }
    }
    verdict = checkKnownHosts(content, policy.host, policy.port, key);
    if (verdict === 'match') return undefined;
  }
  const configured = [
    expected ? `host_fingerprint ${expected}` : '',
    knownHostsPath ? `known_hosts ${knownHostsPath}` : '',
  ]
    .filter(Boolean)
    .join(' or ');
  if (verdict === 'revoked')
    return { reason: `host key ${fingerprint} of ${where} is revoked in ${knownHostsPath}` };
  if (verdict === 'mismatch') {
    return {
      reason: `host key of ${where} CHANGED: server presented ${fingerprint}, which does not match ${configured} (possible man-in-the-middle)`,
    };
  }
  return {
    reason:
      `host key ${fingerprint} of ${where} is not trusted (not in ${configured}); ` +
      'add it to known_hosts or set host_fingerprint, or set insecure_ignore_host_key = true',
  };
}
