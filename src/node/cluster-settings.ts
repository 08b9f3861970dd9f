import type { KV } from '@nats-io/kv';
import { ConfigError } from '../config/config-error.ts';
import type { Logger } from '../logger.ts';

/** What every node of a cluster publishes with: the first node to start records its own. */
export interface ClusterSettings {
  /** `[nats] subject_prefix`: the streams' subjects. */
  readonly subject_prefix: string;
  /** The routing of keys to shards (`SHARD_HASHING`). */
  readonly hashing: string;
  /** `[replication_log] shard_by_table`, sorted: tables routed by name alone. */
  readonly shard_by_table: readonly string[];
  /** Compared, logged when different: nodes may differ. */
  readonly shards: number;
  readonly compress: boolean;
}

export interface ClusterSettingsCheckOptions {
  /** The cluster bucket (`clusterBucket()` in nats/naming.ts). */
  readonly kv: KV;
  readonly nodeId: number;
  readonly settings: ClusterSettings;
  readonly logger: Logger;
}

const KEY = 'settings';

/** Keys a node must share with the cluster, and the config key a user changes for each. */
const SHARED = {
  subject_prefix: '[nats] subject_prefix',
  hashing: 'the shard hashing (HarmonyLite version)',
  shard_by_table: '[replication_log] shard_by_table',
} as const;

interface Stored extends ClusterSettings {
  readonly recorded_by: number;
  readonly recorded_at: string;
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Refuses to start a node whose shared settings differ from the cluster's
 * (design.md, invariant 10): a different subject prefix publishes where no one
 * consumes, a different routing or `shard_by_table` sends one row's changes to
 * two streams (order and convergence lost). The first node records its
 * settings once (KV create); every later start compares. `compress` may
 * differ (each message carries its own flag) and so may `shards` (changed by
 * a rolling restart): logged, not refused.
 * The stream prefix names the bucket itself: nodes with another one form
 * another cluster by design. To change a shared setting, stop every node,
 * delete the record (`nats kv del <stream_prefix>-cluster settings`) and start
 * them with the new value.
 */
export async function checkClusterSettings(o: ClusterSettingsCheckOptions): Promise<void> {
  const ours: ClusterSettings = { ...o.settings, shard_by_table: [...o.settings.shard_by_table].sort() };
  for (;;) {
    const e = await o.kv.get(KEY);
    if (e === null || e.operation !== 'PUT') {
      const record: Stored = { ...ours, recorded_by: o.nodeId, recorded_at: new Date().toISOString() };
      try {
        await o.kv.create(KEY, JSON.stringify(record));
        o.logger.info({ settings: ours }, 'recorded the cluster settings (first node)');
        return;
      } catch {
        continue; // another node recorded them in between: compare with those
      }
    }
    let theirs: Stored;
    try {
      theirs = JSON.parse(e.string()) as Stored;
    } catch (err) {
      throw new ConfigError(`the cluster settings record is not JSON: ${e.string().slice(0, 200)}`, {
        cause: err,
        hint: 'delete it (nats kv del <stream_prefix>-cluster settings); the next node to start records its own',
      });
    }
    const differ = (Object.keys(SHARED) as (keyof typeof SHARED)[]).filter((k) => !same(ours[k], theirs[k]));
    if (differ.length > 0) {
      const what = differ
        .map(
          (k) =>
            `${SHARED[k]} is ${JSON.stringify(ours[k])} here, ${JSON.stringify(theirs[k])} in the cluster`,
        )
        .join('; ');
      throw new ConfigError(
        `this node's settings differ from the cluster's (recorded by node ${theirs.recorded_by} at ${theirs.recorded_at}): ${what}`,
        {
          hint: 'use the same values on every node; to change them for the whole cluster, stop every node and delete the record (nats kv del <stream_prefix>-cluster settings)',
        },
      );
    }
    if (ours.compress !== theirs.compress)
      o.logger.info(
        {
          setting: 'compress',
          here: ours.compress,
          cluster: theirs.compress,
          recorded_by: theirs.recorded_by,
        },
        "compress differs from the first node's: allowed (each message says whether it is compressed)",
      );
    if (ours.shards !== theirs.shards)
      o.logger.warn(
        { setting: 'shards', here: ours.shards, cluster: theirs.shards, recorded_by: theirs.recorded_by },
        "shards differs from the first node's: allowed (a rolling change of the count); this node publishes to streams 1..shards and consumes every change stream that exists under the prefix",
      );
    return;
  }
}
