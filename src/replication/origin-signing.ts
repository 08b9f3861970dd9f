import type { JetStreamClient } from '@nats-io/jetstream';
import { ConfigError } from '../config/config-error.ts';
import { shownPath } from '../config/private-file.ts';
import { signBatch } from './batch-signature.ts';
import { NodeKey } from './node-key.ts';
import { NodeKeyRegistry } from './node-key-registry.ts';
import { OriginVerifier } from './origin-verifier.ts';
import { formatTrustedKeyEntry } from '../config/trusted-key-entry.ts';
import { TrustedKeys } from './trusted-keys.ts';

export interface OriginSigningOptions {
  readonly nodeId: number;
  readonly dbPath: string;
  readonly streamPrefix: string;
  readonly replicas: number;
  /** Refuse batches whose origin signature does not verify (`[replication_log] verify_origins`). */
  readonly verify: boolean;
  /**
   * `[replication_log] trusted_keys`: when not empty, the only keys batches verify
   * against (the key bucket is not consulted), and this node's own key must be one.
   */
  readonly trustedKeys: readonly string[];
}

export interface OriginSigning {
  readonly key: NodeKey;
  /** This node's entry for `trusted_keys`. */
  readonly entry: string;
  /** True when batches verify only against `trusted_keys`. */
  readonly trustedOnly: boolean;
  /** For the publisher: the signature header of a batch. */
  readonly sign: (msgId: string, payload: Uint8Array) => string;
  /** For the consumers; undefined when verification is off. */
  readonly verifier: OriginVerifier | undefined;
}

/**
 * This node's signing key (created on first start) registered in the cluster's
 * key bucket before anything is published, and the verifier of everyone's batches.
 */
export async function openOriginSigning(
  js: JetStreamClient,
  options: OriginSigningOptions,
): Promise<OriginSigning> {
  const key = NodeKey.loadOrCreate(NodeKey.pathFor(options.dbPath));
  const entry = formatTrustedKeyEntry(options.nodeId, key.publicKey);
  const trusted = options.trustedKeys.length > 0 ? new TrustedKeys(options.trustedKeys) : undefined;
  // Every other node listing the same keys would dead-letter all of this node's batches.
  if (trusted !== undefined && !trusted.lists(options.nodeId, key.publicKey)) {
    throw new ConfigError(
      `this node's key (${shownPath(key.path)}) is not listed in [replication_log] trusted_keys for node ${options.nodeId}`,
      { hint: `add "${entry}" to trusted_keys on every node` },
    );
  }
  // Registered either way: nodes without a list of their own verify through the bucket.
  const registry = new NodeKeyRegistry(js, options);
  await registry.register(options.nodeId, key);
  return {
    key,
    entry,
    trustedOnly: trusted !== undefined,
    sign: (msgId, payload) => signBatch(key, msgId, payload),
    verifier: options.verify ? new OriginVerifier(trusted ?? registry) : undefined,
  };
}
