import type { JetStreamClient } from '@nats-io/jetstream';
import { signBatch } from './batch-signature.ts';
import { NodeKey } from './node-key.ts';
import { NodeKeyRegistry } from './node-key-registry.ts';
import { OriginVerifier } from './origin-verifier.ts';

export interface OriginSigningOptions {
  readonly nodeId: number;
  readonly dbPath: string;
  readonly streamPrefix: string;
  readonly replicas: number;
  /** Refuse batches whose origin signature does not verify (`[replication_log] verify_origins`). */
  readonly verify: boolean;
}

export interface OriginSigning {
  readonly key: NodeKey;
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
  const registry = new NodeKeyRegistry(js, options);
  await registry.register(options.nodeId, key);
  return {
    key,
    sign: (msgId, payload) => signBatch(key, msgId, payload),
    verifier: options.verify ? new OriginVerifier(registry) : undefined,
  };
}
