import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import Database from 'better-sqlite3';
import type { Config } from '../config/config.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { leaseBucket } from '../nats/naming.ts';
import { objectStorePurgeDefect } from '../nats/server-defects.ts';
import type { WriterQueue } from '../sqlite/writer-queue.ts';
import { createSnapshotStore } from './create-snapshot-store.ts';
import { listSnapshots } from './snapshot-catalog.ts';
import { errorMessage } from './snapshot-error.ts';
import { SnapshotKey } from './snapshot-key.ts';
import { SnapshotLeader } from './snapshot-leader.ts';
import type { SnapshotManifest } from './snapshot-manifest.ts';
import { readPositions, SnapshotRestorer, type RestoreDecision } from './snapshot-restorer.ts';
import { isRefusal, SnapshotRequestResponder, waitForFreshSnapshot } from './snapshot-requests.ts';
import { SnapshotScheduler } from './snapshot-scheduler.ts';
import type { SnapshotStore } from './snapshot-store.ts';
import { removeStaleTempDirs, snapshotTempParent } from './snapshot-temp-dir.ts';
import { saveSnapshot } from './save-snapshot.ts';
import { progressTerminal } from './transfer-progress.ts';

export interface NodeSnapshotsOptions {
  readonly config: Config;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly nodeId: number;
  /** The node's NATS connection (JetStream streams, the lease, the NATS object store). */
  readonly nc: NatsConnection;
  /** The node's writer queue. */
  readonly writer: WriterQueue;
  /** Lease lifetime of the snapshot leader. Default `[snapshot] leader_ttl`. */
  readonly leaseTtlMs?: number;
}

const LEASE_RETRY_MS = 5000;

/**
 * Everything a running node does about snapshots, behind three calls that
 * `HarmonyLiteNode.open()` makes in order (the logic lives here, the node only
 * hooks it in):
 * 1. `checkRestore()` before the publisher starts (when no stored snapshot
 *    reaches the streams, it asks the cluster for one and waits, see
 *    `snapshot-requests.ts`),
 * 2. `restoreIfNeeded()` once the publisher runs and before any consumer starts,
 * 3. `start()`: leader election, the snapshot scheduler and the answers to
 *    other nodes' snapshot requests (nodes that replicate; a node that does
 *    not only answers that it cannot; `[snapshot] enabled = false` turns all
 *    of it off).
 * `close()` stops the scheduler, releases the lease and the store.
 */
export class NodeSnapshots {
  readonly #o: NodeSnapshotsOptions;
  readonly #abort = new AbortController();
  readonly #logger: Logger;
  #store: Promise<SnapshotStore> | undefined;
  #restorer: SnapshotRestorer | undefined;
  #decision: RestoreDecision | undefined;
  #leader: SnapshotLeader | undefined;
  #scheduler: SnapshotScheduler | undefined;
  #positionsDb: Database.Database | undefined;
  #starting: Promise<void> | undefined;
  #responder: SnapshotRequestResponder | undefined;
  #waiting: string | undefined;

  constructor(options: NodeSnapshotsOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ component: 'snapshot' });
  }

  get enabled(): boolean {
    return this.#o.config.snapshot.enabled;
  }

  /** The leader election, once `start()` set it up (undefined when disabled or not replicating). */
  get leader(): SnapshotLeader | undefined {
    return this.#leader;
  }

  /**
   * Step 1: decides whether this node must restore (see `SnapshotRestorer.check`);
   * waits for the cluster to store a snapshot when none reaches the streams;
   * throws when it must restore and no node can ever provide one.
   */
  async checkRestore(): Promise<void> {
    // A node that does not replicate applies nothing, so its positions say nothing: it never restores.
    if (!this.enabled || !this.#o.config.replicate) return;
    const { config, nc, writer, metrics, nodeId } = this.#o;
    // A bad key file stops the start (ConfigError), not the first snapshot an hour later.
    const key = SnapshotKey.fromConfig(config.snapshot);
    if (key !== undefined)
      this.#logger.info({ key_id: key.id, key_file: key.path }, 'snapshots are encrypted');
    const stale = await removeStaleTempDirs(snapshotTempParent(config));
    if (stale.length > 0)
      this.#logger.info({ dirs: stale }, 'removed temporary snapshot files of a stopped process');
    this.#restorer = new SnapshotRestorer({
      config,
      nodeId,
      store: () => this.#openStore(),
      jsm: await jetstreamManager(nc),
      writer,
      logger: this.#logger,
      metrics,
      terminal: progressTerminal(),
    });
    const restorer = this.#restorer;
    const signal = this.#abort.signal;
    try {
      this.#decision = await restorer.check(signal);
    } catch (err) {
      if (!isRefusal(err)) throw err;
      // Nothing stored serves, but an up-to-date node can store what does: ask instead of exiting.
      this.#decision = await waitForFreshSnapshot({
        nc,
        streamPrefix: config.nats.stream_prefix,
        nodeId,
        refusal: err,
        check: (s) => restorer.check(s),
        streamRanges: (s) => restorer.streamRanges(s),
        onWaiting: (reason) => {
          this.#waiting = reason;
          metrics.snapshotRestoreWaiting.set(reason === undefined ? 0 : 1);
        },
        logger: this.#logger,
        signal,
      });
    }
  }

  /** While `checkRestore()` waits for the cluster to store a snapshot: what it waits for (degraded health). */
  get waiting(): string | undefined {
    return this.#waiting;
  }

  /**
   * Step 2: restores when step 1 said so. `wakePublisher` makes the publisher
   * scan for new local changes (the change detector is not running yet);
   * `onRestored` lets the node drop what it cached about the old database.
   * Resolves with the restored manifest.
   */
  async restoreIfNeeded(hooks: {
    readonly wakePublisher: () => void;
    readonly onRestored: () => void;
  }): Promise<SnapshotManifest | undefined> {
    const decision = this.#decision;
    if (decision === undefined || this.#restorer === undefined) return undefined;
    this.#decision = undefined;
    const manifest = await this.#restorer.restore(decision, {
      signal: this.#abort.signal,
      wakePublisher: hooks.wakePublisher,
    });
    hooks.onRestored();
    return manifest;
  }

  /** Step 3: competes for the snapshot lease and, while leader, takes snapshots when due. */
  start(): void {
    const { config, nc, nodeId, metrics } = this.#o;
    if (!this.enabled || this.#starting !== undefined) return;
    if (!config.replicate) {
      // Its positions say nothing: it answers that it cannot, so an asker does not wait for it.
      this.#responder ??= this.#openResponder(undefined);
      return;
    }
    this.#positionsDb = new Database(config.db_path, {
      readonly: true,
      fileMustExist: true,
      timeout: config.busy_timeout,
    });
    const leader = new SnapshotLeader({
      nc,
      bucket: leaseBucket(config.nats.stream_prefix),
      nodeId,
      ttlMs: this.#o.leaseTtlMs ?? this.#o.config.snapshot.leader_ttl,
      replicas: config.replication_log.replicas,
      logger: this.#logger,
    });
    this.#scheduler = new SnapshotScheduler({
      isLeader: () => leader.isLeader,
      save: (signal) => this.#save(signal),
      latest: async (signal) =>
        (
          await listSnapshots(await this.#openStore(), {
            signal,
            onSkipped: (name, reason) => this.#logger.warn({ object: name, reason }, 'snapshot skipped'),
          })
        )[0],
      positions: () => readPositions(this.#positionsDb!),
      thresholdMessages: Math.max(
        1,
        Math.floor(config.replication_log.max_entries / config.replication_log.shards),
      ),
      intervalMs: config.snapshot.interval,
      logger: this.#logger,
      metrics,
    });
    const signal = this.#abort.signal;
    const scheduler = this.#scheduler;
    const positionsDb = this.#positionsDb;
    this.#responder = this.#openResponder({
      positions: () => Promise.resolve(readPositions(positionsDb)),
      isLeader: () => leader.isLeader,
      takeSnapshot: (reason) => scheduler.requestSnapshot(reason),
    });
    this.#starting = (async () => {
      // JetStream may be briefly unavailable (cluster elections): keep trying until it answers.
      while (!signal.aborted) {
        try {
          await leader.open();
          this.#leader = leader;
          this.#scheduler!.open();
          return;
        } catch (err) {
          this.#logger.warn({ err: errorMessage(err) }, 'cannot open the snapshot lease bucket; retrying');
          await new Promise((r) => setTimeout(r, LEASE_RETRY_MS).unref());
        }
      }
    })();
  }

  async close(): Promise<void> {
    this.#abort.abort();
    await this.#responder?.close();
    await this.#starting;
    await this.#scheduler?.close();
    await this.#leader?.close();
    const store = await this.#store?.catch(() => undefined);
    await store?.close();
    this.#positionsDb?.close();
    this.#positionsDb = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #openResponder(
    replicating:
      | {
          positions: () => Promise<ReadonlyMap<number, number>>;
          isLeader: () => boolean;
          takeSnapshot: (reason: string) => void;
        }
      | undefined,
  ): SnapshotRequestResponder {
    const responder = new SnapshotRequestResponder({
      nc: this.#o.nc,
      streamPrefix: this.#o.config.nats.stream_prefix,
      nodeId: this.#o.nodeId,
      positions: async () => replicating?.positions(),
      isLeader: () => replicating?.isLeader() ?? false,
      takeSnapshot: (reason) => replicating?.takeSnapshot(reason),
      logger: this.#logger,
    });
    responder.open();
    return responder;
  }

  async #save(signal: AbortSignal): Promise<SnapshotManifest> {
    const { config, nodeId, metrics } = this.#o;
    let store: SnapshotStore;
    try {
      store = await this.#openStore();
    } catch (err) {
      metrics.snapshotFailures.inc({ operation: 'save' });
      this.#logger.error({ err: errorMessage(err) }, 'Unable to save snapshot');
      throw err;
    }
    return (await saveSnapshot({ config, nodeId, store, logger: this.#logger, metrics, signal })).manifest;
  }

  /** The store, created and opened once; a failed open is retried by the next call. */
  #openStore(): Promise<SnapshotStore> {
    this.#store ??= (async () => {
      const { config, nc } = this.#o;
      const store = createSnapshotStore(config, { nc });
      await store.open(this.#abort.signal);
      const defect =
        config.snapshot.store === 'nats'
          ? objectStorePurgeDefect(nc?.info?.version, config.snapshot.nats.replicas)
          : undefined;
      if (defect !== undefined) this.#logger.warn({ store: 'nats' }, defect);
      return store;
    })();
    this.#store.catch(() => (this.#store = undefined));
    return this.#store;
  }
}
