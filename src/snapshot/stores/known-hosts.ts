import { createHash, createHmac } from 'node:crypto';

/**
 * The outcome of looking a server's host key up in a known_hosts file:
 * `match` (an entry for this host has this key), `mismatch` (entries for this
 * host exist, none with this key: the key changed), `revoked` (a `@revoked`
 * line lists this key), `unknown` (no entry for this host).
 */
export type KnownHostsVerdict = 'match' | 'mismatch' | 'revoked' | 'unknown';

/**
 * Checks `key` (the SSH wire-format public key blob the server presented)
 * against OpenSSH known_hosts `content` for `host`:`port`, as `ssh` does:
 * plain and `[host]:port` names, comma lists, `*`/`?` wildcards, `!` negation,
 * hashed names (`|1|salt|hmac`, from `ssh-keygen -H`), `@revoked` markers.
 * `@cert-authority` lines are ignored (no certificate support).
 */
export function checkKnownHosts(content: string, host: string, port: number, key: Buffer): KnownHostsVerdict {
  const name = (port === 22 ? host : `[${host}]:${port}`).toLowerCase();
  const keyBase64 = key.toString('base64');
  let sawHost = false;
  let matched = false;
  for (const rawLine of content.split('\n')) {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    const fields = line.split(/\s+/);
    let marker: string | undefined;
    if (fields[0]?.startsWith('@')) marker = fields.shift();
    const [patterns, _type, blob] = fields;
    if (patterns === undefined || blob === undefined || marker === '@cert-authority') continue;
    if (!hostMatches(patterns, name)) continue;
    if (marker === '@revoked') {
      if (blob === keyBase64) return 'revoked';
      continue;
    }
    sawHost = true;
    if (blob === keyBase64) matched = true;
  }
  return matched ? 'match' : sawHost ? 'mismatch' : 'unknown';
}

/** "SHA256:<base64, no padding>" of a key blob: what `ssh-keygen -lf` and `ssh` print. */
export function sshFingerprint(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

/** Normalises a configured fingerprint ("SHA256:abc=", "abc") for comparison with `sshFingerprint`. */
export function normalizeFingerprint(fingerprint: string): string {
  const bare = fingerprint
    .trim()
    .replace(/^SHA256:/i, '')
    .replace(/=+$/, '');
  return `SHA256:${bare}`;
}

function hostMatches(patternList: string, name: string): boolean {
  if (patternList.startsWith('|1|')) return hashedMatches(patternList, name);
  let positive = false;
  for (const raw of patternList.split(',')) {
    const negated = raw.startsWith('!');
    const pattern = (negated ? raw.slice(1) : raw).toLowerCase();
    if (!globMatches(pattern, name)) continue;
    if (negated) return false; // a matching negation rejects the whole line
    positive = true;
  }
  return positive;
}

function hashedMatches(entry: string, name: string): boolean {
  const [, , salt, hash] = entry.split('|');
  if (salt === undefined || hash === undefined) return false;
  const computed = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64');
  return computed === hash;
}

function globMatches(pattern: string, name: string): boolean {
  if (!/[*?]/.test(pattern)) return pattern === name;
  const regex = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${regex}$`).test(name);
}
