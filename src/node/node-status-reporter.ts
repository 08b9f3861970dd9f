import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm, type KV } from '@nats-io/kv';
import type { Logger } from '../logger.ts';
import { statusBucket } from '../nats/naming.ts';
import type { NodeStatus } from '../health/node-status.ts';
import { PeriodicTask } from '../periodic-task.ts';

/** One node's entry in the status bucket (key: the node id), as JSON. */
export interface NodeStatusRecord {
  readonly node_id: number;
  readonly version: string;
  /** When the node wrote this entry, ms since the epoch. */
  readonly updated_at: number;
  readonly started_at: number;
  readonly publish: boolean;
  readonly replicate: boolean;
  readonly nats_connected: boolean;
  readonly tables: number;
  /** Changes captured on this node, not yet published. */
  readonly pending: number;
  /** 0 = nothing published since start. */
  readonly last_publish_at: number;
  /** SHA-256 of the replicated tables' shape; absent in entries of older versions. */
  readonly schema_hash?: string;
  /** Last replicated migration applied or passed over, in stream order; absent in entries of older versions. */
  readonly migration_position?: number;
  /** The migration that failed here and holds the migration stream. */
  readonly migration_held?: { readonly seq: number; readonly name: string; readonly error: string };
  /** Losing versions written to this node's conflict log in the last hour. */
  readonly conflicts_last_hour?: number;
  /** The last periodic verify this node ran (`[verify] interval`, the lowest node id runs it). */
  readonly last_verify?: {
    readonly at: number;
    readonly nodes: number;
    readonly rows: number;
    readonly diverged: number;
    readonly in_flight: number;
    readonly error?: string;
  };
  readonly shards: readonly {
    readonly shard: number;
    /** Stream sequence applied. */
    readonly position: number;
    readonly state: string;
    readonly last_apply_at: number;
  }[];
}

/** Reads a status entry; undefined for anything that is not one (foreign or corrupt values). */
export function parseNodeStatusRecord(bytes: Uint8Array): NodeStatusRecord | undefined {
  try {
    const v = JSON.parse(new TextDecoder().decode(bytes)) as Partial<NodeStatusRecord>;
    if (typeof v.node_id !== 'number' || typeof v.updated_at !== 'number' || !Array.isArray(v.shards))
      return undefined;
    return v as NodeStatusRecord;
  } catch {
    return undefined;
  }
}

export interface NodeStatusReporterDeps {
  readonly js: JetStreamClient;
  readonly status: () => NodeStatus;
  readonly logger: Logger;
}

export interface NodeStatusReporterOptions {
  readonly streamPrefix: string;
  readonly version: string;
  readonly publish: boolean;
  readonly replicate: boolean;
  /** How often the entry is rewritten. */
  readonly intervalMs: number;
  /** Entries older than this disappear (the bucket's max_age): a node gone that long is no longer listed. */
  readonly maxAgeMs: number;
  /** Replicas of the bucket's stream (as the change streams). */
  readonly replicas: number;
}

/**
 * Publishes this node's positions and pending count into the KV bucket
 * `statusBucket(stream_prefix)` under its node id, at once and then every
 * `intervalMs`, so `harmonylite -status` can show every node's position and
 * lag. The bucket keeps one value per key and drops entries after `maxAgeMs`
 * (stream max_age: nothing newer than nats-server 2.9 is used). Failures
 * (NATS down, bucket not yet created) are retried on the next tick, never
 * surfaced: status reporting must not disturb replication.
 */
export class NodeStatusReporter {
  readonly #deps: NodeStatusReporterDeps;
  readonly #options: NodeStatusReporterOptions;
  readonly #startedAt = Date.now();
  #kv: KV | undefined;
  readonly #task: PeriodicTask;
  #failing = false;
  #publishedSchemaHash = '';

  constructor(deps: NodeStatusReporterDeps, options: NodeStatusReporterOptions) {
    this.#deps = deps;
    this.#options = options;
    this.#task = new PeriodicTask(() => this.report(), options.intervalMs);
  }

  open(): void {
    this.#task.open();
  }

  async close(): Promise<void> {
    await this.#task.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Writes this node's entry once; never rejects. */
  async report(): Promise<void> {
    const { logger } = this.#deps;
    try {
      const s = this.#deps.status();
      const record: NodeStatusRecord = {
        node_id: s.nodeId,
        version: this.#options.version,
        updated_at: Date.now(),
        started_at: this.#startedAt,
        publish: this.#options.publish,
        replicate: this.#options.replicate,
        nats_connected: s.natsConnected,
        tables: s.tables.length,
        pending: s.pending,
        last_publish_at: s.lastPublishAt,
        schema_hash: s.schemaHash,
        ...(s.migrations === undefined ? {} : { migration_position: s.migrations.position }),
        ...(s.migrations?.held === undefined
          ? {}
          : {
              migration_held: {
                seq: s.migrations.held.seq,
                name: s.migrations.held.name,
                error: s.migrations.held.error,
              },
            }),
        ...(s.recentConflicts === undefined ? {} : { conflicts_last_hour: s.recentConflicts }),
        ...(s.lastVerify === undefined
          ? {}
          : {
              last_verify: {
                at: s.lastVerify.at,
                nodes: s.lastVerify.nodes,
                rows: s.lastVerify.rows,
                diverged: s.lastVerify.diverged,
                in_flight: s.lastVerify.inFlight,
                ...(s.lastVerify.error === undefined ? {} : { error: s.lastVerify.error }),
              },
            }),
        shards: s.shards.map((x) => ({
          shard: x.shard,
          position: x.position,
          state: x.state.type,
          last_apply_at: x.lastApplyAt,
        })),
      };
      if (!s.natsConnected || this.#task.closed) return;
      this.#kv ??= await new Kvm(this.#deps.js).create(statusBucket(this.#options.streamPrefix), {
        history: 1,
        ttl: this.#options.maxAgeMs,
        replicas: this.#options.replicas,
      });
      await this.#kv.put(String(s.nodeId), JSON.stringify(record));
      if (s.schemaHash !== '' && s.schemaHash !== this.#publishedSchemaHash) {
        // HarmonyLite's line, which its schema migration script waits for.
        logger.info(
          { schema_hash: `${s.schemaHash.slice(0, 16)}...` },
          'Published schema state to cluster registry',
        );
        this.#publishedSchemaHash = s.schemaHash;
      }
      if (this.#failing) logger.debug('status reporting works again');
      this.#failing = false;
    } catch (err) {
      if (this.#task.closed) return;
      // Once per failure streak: a long NATS outage must not flood the log.
      if (!this.#failing) logger.debug({ err: String(err) }, 'reporting node status failed; will retry');
      this.#failing = true;
    }
  }
}

/** Every node's entry in the status bucket; undefined when the bucket does not exist (no node reported). */
export async function readNodeStatuses(
  nc: NatsConnection,
  bucket: string,
): Promise<NodeStatusRecord[] | undefined> {
  let kv;
  try {
    kv = await new Kvm(jetstream(nc)).open(bucket);
  } catch {
    return undefined;
  }
  const keys: string[] = [];
  for await (const k of await kv.keys()) keys.push(k);
  const records: NodeStatusRecord[] = [];
  for (const k of keys) {
    const e = await kv.get(k);
    const r = e?.operation === 'PUT' ? parseNodeStatusRecord(e.value) : undefined;
    if (r !== undefined) records.push(r);
  }
  return records.sort((a, b) => a.node_id - b.node_id);
}
