import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type LabelValues } from 'prom-client';

export interface MetricsOptions {
  readonly namespace: string;
  readonly subsystem: string;
  /** Process metrics (memory, CPU, event-loop lag). */
  readonly processMetrics?: boolean;
}

/** Latencies in seconds, 50 µs to 10 s (HarmonyLite put microseconds in second-sized buckets). */
const LATENCY_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10,
];
const SIZE_BUCKETS = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/**
 * A gauge of an age in seconds: `set(0)` when the thing happens (a snapshot is
 * saved), `set(x)` when it happened x seconds ago; every scrape then reports
 * the age at that moment instead of the value last set.
 */
class AgeGauge extends Gauge {
  #since: number | undefined;

  constructor(config: { name: string; help: string; registers: Registry[] }) {
    super({
      ...config,
      collect(this: Gauge) {
        const since = (this as AgeGauge).#since;
        if (since !== undefined) Gauge.prototype.set.call(this, Math.max(0, (Date.now() - since) / 1000));
      },
    });
  }

  override set(...args: [number] | [LabelValues<string>, number]): void {
    const value = args.length === 1 ? args[0] : args[1];
    this.#since = Date.now() - value * 1000;
    super.set(value);
  }
}

/**
 * Every metric of the node, declared in one place on an injected registry.
 * Labels are low-cardinality: `shard` only, never table or key.
 */
export class Metrics {
  readonly registry: Registry;
  // The seed's four, same names and meaning.
  readonly published: Counter;
  readonly pendingPublish: Gauge;
  readonly countChanges: Histogram;
  readonly scanChanges: Histogram;
  // Publish path.
  readonly publishLatency: Histogram<'shard'>;
  readonly publishBatchSize: Histogram<'shard'>;
  readonly publishRetries: Counter<'shard'>;
  readonly publishFailures: Counter<'shard'>;
  readonly publishRefused: Counter<'shard'>;
  // Replay path.
  readonly applied: Counter<'shard'>;
  readonly applyBatchSize: Histogram<'shard'>;
  readonly applyLatency: Histogram<'shard'>;
  readonly duplicatesSkipped: Counter<'shard'>;
  readonly versionsSuperseded: Counter<'shard'>;
  readonly changesDeferred: Counter<'shard'>;
  readonly conflicts: Counter<'shard'>;
  readonly versionsAheadOfClock: Counter<'shard'>;
  readonly deadLetters: Counter<'shard'>;
  readonly originRefused: Counter<'shard'>;
  readonly originSeqRefused: Counter<'shard'>;
  readonly holdsExpired: Counter<'shard'>;
  readonly uniqueDisplaced: Counter<'shard'>;
  readonly changesRefused: Counter<'shard'>;
  readonly oldSchemaChanges: Counter<'shard' | 'outcome'>;
  readonly shardWaiting: Gauge<'shard'>;
  readonly shardBehind: Gauge<'shard'>;
  // Replicated migrations.
  readonly migrationsApplied: Counter;
  readonly migrationFailures: Counter;
  readonly migrationHeld: Gauge;
  readonly streamReplaced: Counter<'shard'>;
  readonly streamRecovering: Gauge<'shard'>;
  readonly streamReplacedRecoveries: Counter<'outcome'>;
  readonly streamsConsumed: Gauge;
  readonly streamsBeyondShards: Gauge;
  readonly lagMessages: Gauge<'shard'>;
  readonly lagSeconds: Gauge<'shard'>;
  readonly appliedPosition: Gauge<'shard'>;
  // NATS.
  readonly natsConnected: Gauge;
  readonly natsReconnects: Counter;
  // Database and workers.
  readonly writerWait: Histogram;
  readonly writerQueueDepth: Gauge;
  readonly sqliteBusy: Counter;
  readonly poolUtilization: Gauge;
  readonly walBytes: Gauge;
  readonly walCheckpoints: Counter<'mode'>;
  readonly cleanedUp: Counter;
  // Snapshots.
  readonly snapshotAge: Gauge;
  readonly snapshotDuration: Histogram<'operation'>;
  readonly snapshotSize: Gauge;
  readonly snapshotFailures: Counter<'operation'>;
  readonly snapshotRestoreWaiting: Gauge;
  readonly verifyDifferingKeys: Gauge;
  readonly #processPrefix: string;
  #processMetrics = false;

  constructor(options: MetricsOptions, registry = new Registry()) {
    this.registry = registry;
    const prefix = [options.namespace, options.subsystem].filter((s) => s !== '').join('_');
    const name = (n: string) => (prefix === '' ? n : `${prefix}_${n}`);
    const registers = [registry];
    const shard = ['shard'] as const;

    this.published = new Counter({
      name: name('published'),
      help: 'Change records published (acknowledged by JetStream)',
      registers,
    });
    this.pendingPublish = new Gauge({
      name: name('pending_publish'),
      help: 'Change records awaiting publication',
      registers,
    });
    this.countChanges = new Histogram({
      name: name('count_changes'),
      help: 'Latency of counting pending changes, seconds',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.scanChanges = new Histogram({
      name: name('scan_changes'),
      help: 'Latency of scanning change rows, seconds',
      buckets: LATENCY_BUCKETS,
      registers,
    });

    this.publishLatency = new Histogram({
      name: name('publish_latency_seconds'),
      help: 'Time from publishing a batch to its PubAck',
      labelNames: shard,
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.publishBatchSize = new Histogram({
      name: name('publish_batch_changes'),
      help: 'Changes per published message',
      labelNames: shard,
      buckets: SIZE_BUCKETS,
      registers,
    });
    this.publishRetries = new Counter({
      name: name('publish_retries_total'),
      help: 'Publish attempts retried',
      labelNames: shard,
      registers,
    });
    this.publishFailures = new Counter({
      name: name('publish_failures_total'),
      help: 'Publish attempts that failed (each is retried)',
      labelNames: shard,
      registers,
    });
    this.publishRefused = new Counter({
      name: name('publish_refused_total'),
      help: 'Changes too large for any message, kept in the change log with state 2',
      labelNames: shard,
      registers,
    });

    this.applied = new Counter({
      name: name('changes_applied_total'),
      help: 'Changes applied from the streams',
      labelNames: shard,
      registers,
    });
    this.applyBatchSize = new Histogram({
      name: name('apply_batch_messages'),
      help: 'Messages per apply transaction',
      labelNames: shard,
      buckets: SIZE_BUCKETS,
      registers,
    });
    this.applyLatency = new Histogram({
      name: name('apply_latency_seconds'),
      help: 'Duration of one apply transaction',
      labelNames: shard,
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.duplicatesSkipped = new Counter({
      name: name('duplicates_skipped_total'),
      help: 'Messages skipped as already applied',
      labelNames: shard,
      registers,
    });
    this.versionsSuperseded = new Counter({
      name: name('changes_superseded_total'),
      help: 'Received changes not applied: the row already holds a newer version (last writer wins)',
      labelNames: shard,
      registers,
    });
    this.changesDeferred = new Counter({
      name: name('changes_deferred_total'),
      help: 'Received changes parked until the local writes to their row come back versioned',
      labelNames: shard,
      registers,
    });
    this.conflicts = new Counter({
      name: name('conflicts_total'),
      help: 'Losing versions of rows written to the conflict log (superseded writes, rows displaced by a UNIQUE value)',
      labelNames: shard,
      registers,
    });
    this.versionsAheadOfClock = new Counter({
      name: name('versions_ahead_of_clock_total'),
      help: "Changes applied whose version was ahead of this node's clock by more than max_clock_skew",
      labelNames: shard,
      registers,
    });
    this.deadLetters = new Counter({
      name: name('dead_letters_total'),
      help: 'Messages moved to the dead-letter table',
      labelNames: shard,
      registers,
    });
    this.originRefused = new Counter({
      name: name('origin_refused_total'),
      help: 'Messages dead-lettered because their origin node could not be verified (signature)',
      labelNames: shard,
      registers,
    });
    this.originSeqRefused = new Counter({
      name: name('origin_seq_refused_total'),
      help: 'Messages dead-lettered because their batch seq is beyond what their origin node reserved',
      labelNames: shard,
      registers,
    });
    this.holdsExpired = new Counter({
      name: name('schema_holds_expired_total'),
      help: 'Messages dead-lettered after holding their shard for the schema longer than max_hold',
      labelNames: shard,
      registers,
    });
    this.uniqueDisplaced = new Counter({
      name: name('unique_displaced_total'),
      help: 'Rows that lost a UNIQUE value to a newer row (parked, and restored when the value is free)',
      labelNames: shard,
      registers,
    });
    this.changesRefused = new Counter({
      name: name('changes_refused_total'),
      help: "Changes refused by this node's application triggers or constraints (in the conflict log, reason refused)",
      labelNames: shard,
      registers,
    });
    this.oldSchemaChanges = new Counter({
      name: name('old_schema_changes_total'),
      help:
        'Changes naming a table or column this node renamed or dropped: outcome mapped (applied under the new name), ' +
        'skipped (table dropped) or dropped_value (a dropped column left out)',
      labelNames: [...shard, 'outcome'],
      registers,
    });
    this.shardWaiting = new Gauge({
      name: name('shard_waiting_for_schema'),
      help: '1 while a shard holds a message this node cannot apply until its schema catches up',
      labelNames: shard,
      registers,
    });
    this.shardBehind = new Gauge({
      name: name('shard_behind_stream'),
      help: '1 when the stream discarded messages this node has not applied (a snapshot restore is needed)',
      labelNames: shard,
      registers,
    });
    this.migrationsApplied = new Counter({
      name: name('migrations_applied_total'),
      help: 'Replicated migrations (-migrate) this node applied',
      registers,
    });
    this.migrationFailures = new Counter({
      name: name('migration_failures_total'),
      help: 'Attempts to apply a replicated migration that failed (the migration stream is held meanwhile)',
      registers,
    });
    this.migrationHeld = new Gauge({
      name: name('migration_held'),
      help: '1 while a replicated migration that failed here (or is missing from its stream) holds the migration stream',
      registers,
    });
    this.streamReplaced = new Counter({
      name: name('stream_replaced_total'),
      help: 'Shard streams found recreated (another creation time: a wiped JetStream store) or missing',
      labelNames: shard,
      registers,
    });
    this.verifyDifferingKeys = new Gauge({
      name: name('verify_differing_keys'),
      help: 'Keys that differ between nodes (not in flight) at the last periodic verify run by this node',
      registers,
    });
    this.streamRecovering = new Gauge({
      name: name('stream_replaced_recovering'),
      help: '1 from a replaced stream being found until this node has replayed it up to its end at that time',
      labelNames: shard,
      registers,
    });
    this.streamReplacedRecoveries = new Counter({
      name: name('stream_replaced_recoveries_total'),
      help: 'Starts that found recreated streams, by how this node recovered: restored (a snapshot made since reached them) or replayed (none did: the new streams replayed from their start)',
      labelNames: ['outcome'] as const,
      registers,
    });
    this.streamsConsumed = new Gauge({
      name: name('streams_consumed'),
      help: 'Change streams this node consumes: every stream under the prefix, whatever its own shards',
      registers,
    });
    this.streamsBeyondShards = new Gauge({
      name: name('streams_beyond_shards'),
      help: "Change streams beyond this node's own shards (another node publishes, or published, with more shards)",
      registers,
    });
    this.lagMessages = new Gauge({
      name: name('replication_lag_messages'),
      help: 'Stream last sequence minus the applied position',
      labelNames: shard,
      registers,
    });
    this.lagSeconds = new Gauge({
      name: name('replication_lag_seconds'),
      help: 'End-to-end lag: the age of each change as it is applied; while messages wait, the age of the oldest unapplied one; 0 when caught up',
      labelNames: shard,
      registers,
    });
    this.appliedPosition = new Gauge({
      name: name('applied_position'),
      help: 'Stream sequence applied',
      labelNames: shard,
      registers,
    });

    this.natsConnected = new Gauge({
      name: name('nats_connected'),
      help: '1 when connected to NATS',
      registers,
    });
    this.natsReconnects = new Counter({
      name: name('nats_reconnects_total'),
      help: 'NATS reconnections',
      registers,
    });

    this.writerWait = new Histogram({
      name: name('writer_queue_wait_seconds'),
      help: 'Time a write job waited for the writer queue',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.writerQueueDepth = new Gauge({
      name: name('writer_queue_depth'),
      help: 'Write jobs queued or running',
      registers,
    });
    this.sqliteBusy = new Counter({
      name: name('sqlite_busy_total'),
      help: 'Write jobs that failed with SQLITE_BUSY (database is locked) after the busy timeout; each is retried',
      registers,
    });
    this.poolUtilization = new Gauge({
      name: name('worker_pool_utilization'),
      help: 'Busy fraction of the shard workers',
      registers,
    });
    this.walBytes = new Gauge({ name: name('wal_bytes'), help: 'Size of the -wal file', registers });
    this.walCheckpoints = new Counter({
      name: name('wal_checkpoints_total'),
      help: 'WAL checkpoints the node ran past wal_checkpoint_bytes, by mode (PASSIVE, TRUNCATE)',
      labelNames: ['mode'],
      registers,
    });
    this.cleanedUp = new Counter({
      name: name('changes_cleaned_up_total'),
      help: 'Published change-log rows deleted',
      registers,
    });

    this.snapshotAge = new AgeGauge({
      name: name('snapshot_age_seconds'),
      help: 'Age of the newest snapshot in the store (set(0) when one is saved; grows until the next)',
      registers,
    });
    this.snapshotDuration = new Histogram({
      name: name('snapshot_duration_seconds'),
      help: 'Duration of snapshot save and restore',
      labelNames: ['operation'] as const,
      buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
      registers,
    });
    this.snapshotSize = new Gauge({
      name: name('snapshot_size_bytes'),
      help: 'Size of the last snapshot saved or restored',
      registers,
    });
    this.snapshotFailures = new Counter({
      name: name('snapshot_failures_total'),
      help: 'Snapshot saves or restores that failed',
      labelNames: ['operation'] as const,
      registers,
    });
    this.snapshotRestoreWaiting = new Gauge({
      name: name('snapshot_restore_waiting'),
      help: '1 while this node must restore and waits for the cluster to store a snapshot that reaches the streams',
      registers,
    });

    this.#processPrefix = prefix === '' ? '' : `${prefix}_`;
    if (options.processMetrics !== false) this.enableProcessMetrics();
  }

  /**
   * Adds prom-client's process metrics (memory, CPU, event-loop lag, GC) under the
   * same prefix, e.g. `harmonylite_process_resident_memory_bytes`. Idempotent:
   * the node calls it when it serves `/metrics`, whatever the constructor was told.
   */
  enableProcessMetrics(): void {
    if (this.#processMetrics) return;
    this.#processMetrics = true;
    collectDefaultMetrics({ register: this.registry, prefix: this.#processPrefix });
  }
}
