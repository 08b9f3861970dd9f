/**
 * Node keys listed by the operator (`[replication_log] trusted_keys`), each
 * `<node id>:<base64 of the 32-byte Ed25519 public key>`. When the list is
 * set, a batch verifies only against a key listed for its origin: the key
 * bucket is not consulted, so whoever may write it can no longer add a key
 * (no trust on first use). Pure.
 */
import type { KeyObject } from 'node:crypto';
import { parseTrustedKeyEntry, type TrustedKeyEntry } from '../config/trusted-key-entry.ts';
import { keyFingerprint, publicKeyFromRaw } from './batch-signature.ts';
import type { OriginKeys } from './origin-verifier.ts';

export interface TrustedKey extends TrustedKeyEntry {
  readonly fingerprint: string;
}

/** One entry with its fingerprint, or why it is malformed. */
export function parseTrustedKey(entry: string): TrustedKey | string {
  const k = parseTrustedKeyEntry(entry);
  if (typeof k === 'string') return k;
  try {
    publicKeyFromRaw(k.publicKey);
  } catch {
    return 'an Ed25519 public key';
  }
  return { ...k, fingerprint: keyFingerprint(k.publicKey) };
}

export class TrustedKeys implements OriginKeys {
  readonly #keys = new Map<string, KeyObject>();
  readonly #entries: readonly TrustedKey[];

  /** Throws a RangeError naming the first malformed entry (the config check reports them first). */
  constructor(entries: readonly string[]) {
    this.#entries = entries.map((e, i) => {
      const k = parseTrustedKey(e);
      if (typeof k === 'string') throw new RangeError(`trusted key ${i} must be ${k}`);
      return k;
    });
    for (const k of this.#entries)
      this.#keys.set(`${k.nodeId}.${k.fingerprint}`, publicKeyFromRaw(k.publicKey));
  }

  /** True when `publicKey` is listed for `nodeId`. */
  lists(nodeId: number, publicKey: Uint8Array): boolean {
    return this.#entries.some((k) => k.nodeId === nodeId && k.publicKey.equals(publicKey));
  }

  lookup(origin: number, fingerprint: string): Promise<KeyObject | undefined> {
    return Promise.resolve(this.#keys.get(`${origin}.${fingerprint}`));
  }
}
