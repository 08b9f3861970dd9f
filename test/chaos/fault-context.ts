/**
 * What a fault works with: the cluster, the schedule it draws its choices
 * from, the stream history (to discard messages through), the writers (to
 * label writes it learnt something about), and where it reports.
 */
import type { JetStreamManager } from '@nats-io/jetstream';
import type { ChaosCluster } from './chaos-cluster.ts';
import type { ChaosWriters } from './chaos-writers.ts';
import type { FaultSchedule } from './fault-schedule.ts';
import type { StreamHistory } from './stream-history.ts';

export interface FaultStats {
  /** Snapshot-restore faults run, and those whose node restored a snapshot at restart. */
  restoreFaults: number;
  restores: number;
  /** Messages the snapshot-restore faults discarded from the streams. */
  discardedMessages: number;
  /** Writes a stopped node had not published when it stopped for a restore (they must survive it). */
  pendingAtStop: number;
  /** Full-disk faults run, saves that failed with a clear error meanwhile, and saves that succeeded after. */
  fullDiskFaults: number;
  fullDiskSaveFailures: number;
  savesAfterFreed: number;
  /** Messages a hostile publisher sent, as "<shard>:<stream seq>": dead letters on every node, out of the history. */
  hostileMessages: string[];
}

export function emptyFaultStats(): FaultStats {
  return {
    restoreFaults: 0,
    restores: 0,
    discardedMessages: 0,
    pendingAtStop: 0,
    fullDiskFaults: 0,
    fullDiskSaveFailures: 0,
    savesAfterFreed: 0,
    hostileMessages: [],
  };
}

export interface FaultContext {
  readonly cluster: ChaosCluster;
  readonly schedule: FaultSchedule;
  readonly history: StreamHistory;
  /** A connection of the chaos suite's own, straight to the servers (no proxy). */
  readonly jsm: JetStreamManager;
  readonly writers: ChaosWriters;
  readonly shards: number;
  /** Adds a line to the fault schedule (and the live log). */
  note(line: string): void;
  /** Records a failed check of the fault's own. */
  fail(check: string): void;
  readonly stats: FaultStats;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
