import type { KeyObject } from 'node:crypto';
import type { JetStreamClient } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { nodeKeyBucket } from '../nats/naming.ts';
import { publicKeyFromRaw } from './batch-signature.ts';
import type { NodeKey } from './node-key.ts';

export interface NodeKeyRegistryOptions {
  readonly streamPrefix: string;
  readonly replicas: number;
}

/**
 * The nodes' public signing keys, in the KV bucket `<stream_prefix>-node-keys`
 * under `<node id>.<fingerprint>`. Every key a node ever used stays registered,
 * so batches it signed before its key file was replaced still verify when a
 * node replays the stream. A node registers its key before it publishes, so a
 * batch whose key is missing was not signed by a node of this cluster.
 * Whoever may write this bucket may register keys: see docs/threat-model.md.
 */
export class NodeKeyRegistry {
  readonly #js: JetStreamClient;
  readonly #options: NodeKeyRegistryOptions;
  readonly #known = new Map<string, KeyObject>();
  #kv: KV | undefined;

  constructor(js: JetStreamClient, options: NodeKeyRegistryOptions) {
    this.#js = js;
    this.#options = options;
  }

  async #bucket(): Promise<KV> {
    this.#kv ??= await new Kvm(this.#js).create(nodeKeyBucket(this.#options.streamPrefix), {
      history: 1,
      replicas: this.#options.replicas,
    });
    return this.#kv;
  }

  /** Registers this node's key (once per key). */
  async register(nodeId: number, key: NodeKey): Promise<void> {
    const kv = await this.#bucket();
    const name = `${nodeId}.${key.fingerprint}`;
    const entry = await kv.get(name);
    if (entry === null || entry.operation !== 'PUT' || !Buffer.from(entry.value).equals(key.publicKey))
      await kv.put(name, key.publicKey);
    this.#known.set(name, publicKeyFromRaw(key.publicKey));
  }

  /** The registered key of `origin` with this fingerprint, or undefined. */
  async lookup(origin: number, fingerprint: string): Promise<KeyObject | undefined> {
    const name = `${origin}.${fingerprint}`;
    const known = this.#known.get(name);
    if (known !== undefined) return known;
    const entry = await (await this.#bucket()).get(name);
    if (entry === null || entry.operation !== 'PUT' || entry.value.length !== 32) return undefined;
    const key = publicKeyFromRaw(entry.value);
    this.#known.set(name, key);
    return key;
  }
}
