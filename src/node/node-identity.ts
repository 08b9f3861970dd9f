import { Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../logger.ts';
import { clusterBucket, nodeRegistryBucket } from '../nats/naming.ts';
import { BatchSeqReservation } from '../replication/batch-seq-reservation.ts';
import { checkClusterSettings, type ClusterSettings } from './cluster-settings.ts';
import { NodeRegistration } from './node-registration.ts';

export interface NodeIdentityOptions {
  readonly nc: NatsConnection;
  readonly nodeId: number;
  readonly dbPath: string;
  readonly streamPrefix: string;
  /** Replicas of the two buckets' streams when this node creates them (as the change streams). */
  readonly replicas: number;
  readonly settings: ClusterSettings;
  readonly logger: Logger;
  readonly signal?: AbortSignal;
}

/**
 * A node's identity in its cluster, established before it publishes or
 * applies anything (design.md, invariant 10): its settings match the
 * cluster's (`cluster-settings.ts`), no other live process holds its node id
 * (`node-registration.ts`), and its batch seqs continue above the highest it
 * ever reserved (`batch-seq-reservation.ts`). Each step throws an error that
 * names what differs or who holds the id; `close()` releases the id.
 */
export class NodeIdentity {
  readonly #o: NodeIdentityOptions;
  #registration: NodeRegistration | undefined;
  #seqs: BatchSeqReservation | undefined;

  constructor(options: NodeIdentityOptions) {
    this.#o = options;
  }

  /** The batch seq floor, once open. */
  get seqs(): BatchSeqReservation {
    if (this.#seqs === undefined) throw new Error('the node identity is not open');
    return this.#seqs;
  }

  async open(): Promise<void> {
    const o = this.#o;
    const openBucket = () =>
      new Kvm(o.nc).create(clusterBucket(o.streamPrefix), { history: 1, replicas: o.replicas });
    const kv = await openBucket();
    await checkClusterSettings({ kv, nodeId: o.nodeId, settings: o.settings, logger: o.logger });
    this.#registration ??= new NodeRegistration({
      nc: o.nc,
      bucket: nodeRegistryBucket(o.streamPrefix),
      nodeId: o.nodeId,
      dbPath: o.dbPath,
      replicas: o.replicas,
      logger: o.logger,
      ...(o.signal !== undefined ? { signal: o.signal } : {}),
    });
    await this.#registration.open();
    this.#seqs = new BatchSeqReservation({ openBucket, nodeId: o.nodeId });
  }

  async close(): Promise<void> {
    await this.#registration?.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
