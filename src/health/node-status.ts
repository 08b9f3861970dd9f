import type { LastVerify } from '../verify/periodic-verify.ts';
import type { HeldMigration } from '../migration/migration-follower.ts';
import type { ShardConsumer } from '../replication/shard-consumer.ts';

/** What a node reports about itself, for health, metrics and the status line. */
export interface NodeStatus {
  readonly nodeId: number;
  readonly tables: readonly string[];
  readonly pending: number;
  readonly natsConnected: boolean;
  /** Replaced shard streams not yet recovered from (health is degraded meanwhile). */
  readonly streamProblems?: readonly string[];
  readonly lastPublishAt: number;
  /** SHA-256 of the captured tables' shape (src/cdc/schema-hash.ts). */
  readonly schemaHash: string;
  readonly shards: readonly {
    shard: number;
    position: number;
    state: ShardConsumer['state'];
    lastApplyAt: number;
    duplicatesSkipped: number;
    deadLetters: number;
  }[];
  /** Set while the start waits for the cluster to store a snapshot this node can restore: what it waits for. */
  readonly waitingForSnapshot?: string;
  /** Replicated migrations: the last one applied (or passed over) in stream order, and the one holding, if any. */
  readonly migrations?: { readonly position: number; readonly held?: HeldMigration };
  /** Set while the last periodic verify found keys differing between nodes (health is degraded). */
  readonly verifyProblem?: string;
  /** Losing versions written to this node's conflict log in the last hour. */
  readonly recentConflicts?: number;
  /** The last periodic verify run by this node. */
  readonly lastVerify?: LastVerify;
}
