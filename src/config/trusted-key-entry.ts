/**
 * One entry of `[replication_log] trusted_keys`: `<node id>:<base64 of the
 * 32-byte Ed25519 public key>`, as a node logs its own at start. Pure.
 */

export interface TrustedKeyEntry {
  readonly nodeId: number;
  /** The 32 raw bytes of the public key. */
  readonly publicKey: Buffer;
}

export function formatTrustedKeyEntry(nodeId: number, publicKey: Uint8Array): string {
  return `${nodeId}:${Buffer.from(publicKey).toString('base64')}`;
}

/** The entry, or what it should have been. */
export function parseTrustedKeyEntry(entry: string): TrustedKeyEntry | string {
  const m = /^(\d{1,16}):([A-Za-z0-9+/]{43}=)$/.exec(entry.trim());
  if (m === null) return 'an entry "<node id>:<base64 Ed25519 public key, 44 characters>"';
  const nodeId = Number(m[1]);
  if (!Number.isSafeInteger(nodeId) || nodeId <= 0) return 'a node id from 1';
  const publicKey = Buffer.from(m[2]!, 'base64');
  if (publicKey.length !== 32) return 'a base64 public key of 32 bytes';
  return { nodeId, publicKey };
}
