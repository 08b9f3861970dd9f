import { mkdirSync, statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { basename, dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { installCapture, type CaptureState, type InstallOptions } from '../cdc/capture-installer.ts';
import { TableFilter } from '../cdc/table-filter.ts';
import { ChangeDetector } from '../changelog/change-detector.ts';
import { cleanupStep, cleanupTables, type CleanupPosition } from '../changelog/changelog-cleaner.ts';
import { ChangelogScanner } from '../changelog/changelog-scanner.ts';
import type { Config } from '../config/config.ts';
import type { NodeStatus } from '../health/node-status.ts';
import { excludedTables } from '../config/excluded-tables.ts';
import { requireDatabase } from '../config/load-config.ts';
import { redactUrl, type Logger } from '../logger.ts';
import { Metrics } from '../metrics/metrics.ts';
import { NodeObservability } from './node-observability.ts';
import { embeddedClientAuth } from '../nats/embedded-client-auth.ts';
import { EmbeddedNatsServer, type EmbeddedNatsServerOptions } from '../nats/embedded-server.ts';
import { splitRouteCredentials } from '../nats/route-credentials.ts';
import { clusterBucket, statusBucket, streamName, shardNumbers } from '../nats/naming.ts';
import { connectNats, probeOptions } from '../nats/nats-connection.ts';
import { ensureStreams, listShardStreams } from '../nats/stream-manager.ts';
import { HybridClock } from '../replication/hybrid-clock.ts';
import { RowDigest } from '../codec/row-digest.ts';
import { maxIndexedVersion, pruneConflicts, recentConflicts } from '../replication/row-version-store.ts';
import { reservedSeqReader } from '../replication/batch-seq-reservation.ts';
import { OriginSeqCeiling } from '../replication/origin-seq-ceiling.ts';
import { openOriginSigning, type OriginSigning } from '../replication/origin-signing.ts';
import { whenWriteLockFree } from '../sqlite/write-lock-poll.ts';
import { OutboxStore } from '../replication/outbox-store.ts';
import { Publisher } from '../replication/publisher.ts';
import { ShardConsumer } from '../replication/shard-consumer.ts';
import { StreamIdentities, type ReplacedStream } from '../replication/stream-identities.ts';
import { recoverStreams } from './recover-streams.ts';
import { createShardHasher } from '../replication/shard-hasher.ts';
import { ShardPool } from '../replication/shard-pool.ts';
import { WriterQueue } from '../sqlite/writer-queue.ts';
import { NodeSnapshots } from '../snapshot/node-snapshots.ts';
import { CaptureLog } from './capture-log.ts';
import { openDatabase } from '../sqlite/open-database.ts';
import { NodeIdentity } from './node-identity.ts';
import { keepNodeId, resolveNodeId } from './node-id.ts';
import { SHARD_HASHING } from '../replication/shard-hasher.ts';
import { MigrationFollower } from '../migration/migration-follower.ts';
import { ensureMigrationStream } from '../migration/migration-stream.ts';
import type { ProgressDisplay } from '../snapshot/transfer-progress.ts';
import { checkpointInWorker } from '../sqlite/wal-checkpoint.ts';
import { errorMessage } from '../error-message.ts';
import { isJetStreamUnavailable } from '../nats/nats-errors.ts';
import { reconcileIndex } from '../cdc/index-reconciler.ts';
import { DigestHasher } from '../verify/digest-tree.ts';
import { VerifyResponder } from '../verify/verify-responder.ts';
import { replicatedHandler } from '../verify/replicated-endpoint.ts';
import { WriteWaiter } from '../verify/write-waiter.ts';
import { PeriodicVerify } from '../verify/periodic-verify.ts';
import { readNodeStatuses } from './node-status-reporter.ts';

export interface NodeOptions {
  readonly config: Config;
  readonly logger: Logger;
  readonly metrics?: Metrics;
  /** `-cluster-addr`: route listen address of the embedded nats-server. */
  readonly clusterAddress?: string;
  /** `-cluster-peers`: route URLs of the other embedded servers. */
  readonly clusterPeers?: readonly string[];
  /** `-leaf-servers`: leafnode remotes of the embedded server. */
  readonly leafServers?: readonly string[];
  /** Shows snapshot transfers to a person (the CLI's terminal bar), if anyone watches. */
  readonly progressDisplay?: ProgressDisplay | undefined;
  /** Milliseconds since the epoch, for batch seqs. Default `Date.now` (tests set a wrong clock). */
  readonly clock?: () => number;
}

/** Change ids looked at per cleanup step (one short transaction, ~1 ms for 100-byte rows here). */
const CLEANUP_SPAN = 1000;
/** Longest pause between two cleanup steps, ms. */
const CLEANUP_MAX_PAUSE_MS = 50;
/** How often a running node looks for change streams added by other nodes (a rolling change of `shards`). */
const STREAM_DISCOVERY_MS = 5000;

/**
 * One HarmonyLite node: capture on the application's database, a publisher and
 * one consumer per shard over NATS JetStream, and the housekeeping timers.
 * `open()` starts everything in order; `close()` stops it in reverse.
 */
export class HarmonyLiteNode {
  readonly config: Config;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly nodeId: number;
  readonly #options: NodeOptions;
  readonly #filter: TableFilter;
  readonly #abort = new AbortController();
  #writeDb: Database.Database | undefined;
  #readDb: Database.Database | undefined;
  #server: EmbeddedNatsServer | undefined;
  readonly #captureLog: CaptureLog;
  #nc: NatsConnection | undefined;
  #js: JetStreamClient | undefined;
  #jsm: JetStreamManager | undefined;
  #pool: ShardPool | undefined;
  #detector: ChangeDetector | undefined;
  #scanner: ChangelogScanner | undefined;
  #publisher: Publisher | undefined;
  #consumers: ShardConsumer[] = [];
  #migrations: MigrationFollower | undefined;
  #identity: NodeIdentity | undefined;
  #streamIds: StreamIdentities | undefined;
  #ensureStreams: (() => Promise<unknown>) | undefined;
  #newConsumer: ((shard: number) => ShardConsumer) | undefined;
  #streamRecovery: Promise<void> | undefined;
  /** Every change stream's shard number this node consumes: its own 1..shards and any other found. */
  readonly #consumed = new Set<number>();
  #discovery: Promise<void> | undefined;
  #checkpointing = false;
  /** Size of the -wal file when a checkpoint last completed (every frame in the database file). */
  #walCheckpointed: number | undefined;
  #cleaning = false;
  #timers: NodeJS.Timeout[] = [];
  #capture: CaptureState | undefined;
  #schemaCheck: Promise<void> | undefined;
  #schemaCheckAgain = false;
  #natsUp = false;
  #opening: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  // Metrics/health endpoints, lag collector, status reporter.
  #observability: NodeObservability | undefined;
  // Restore at start, leader lease, scheduler; see src/snapshot/node-snapshots.ts.
  #snapshots: NodeSnapshots | undefined;
  readonly writer = new WriterQueue();
  /** Versions local changes; shared with the shard workers, which move it past every remote version. */
  readonly clock = new HybridClock();
  #digest: RowDigest | undefined;
  // Answers -verify and -repair (src/verify/), on its own read-only connection.
  #verify:
    | { responder: VerifyResponder; waiter: WriteWaiter; periodic?: PeriodicVerify; db: Database.Database }
    | undefined;

  constructor(options: NodeOptions) {
    this.#options = options;
    this.config = options.config;
    this.logger = options.logger;
    requireDatabase(this.config);
    this.nodeId = resolveNodeId(this.config.node_id, this.config.db_path, {
      busyTimeoutMs: this.config.busy_timeout,
      create: true,
    })!;
    this.metrics =
      options.metrics ??
      new Metrics({
        namespace: this.config.prometheus.namespace,
        subsystem: this.config.prometheus.subsystem,
        processMetrics: false,
      });
    this.#filter = new TableFilter(this.config.include_tables, excludedTables(this.config));
    this.#captureLog = new CaptureLog(this.logger, this.config.migration_tables);
    this.writer.onWait = (ms) => this.metrics.writerWait.observe(ms / 1000);
  }

  get natsConnection(): NatsConnection | undefined {
    return this.#nc;
  }

  get embeddedServer(): EmbeddedNatsServer | undefined {
    return this.#server;
  }

  get consumers(): readonly ShardConsumer[] {
    return this.#consumers;
  }

  /** The node's endpoints and collectors, once open. */
  get observability(): NodeObservability | undefined {
    return this.#observability;
  }

  /** Tables under capture, after the last install. */
  get tables(): readonly string[] {
    return this.#capture?.tables.map((t) => t.name) ?? [];
  }

  /**
   * Starts the node. A close() while this runs makes it stop at its next wait
   * (it then rejects) and close() waits for it before tearing down, so the two
   * never race over half-opened resources.
   */
  open(): Promise<void> {
    this.#opening ??= this.#open();
    return this.#opening;
  }

  /** Throws when close() began: open() must not start what close() already passed. */
  #checkOpen(): void {
    if (this.#abort.signal.aborted) throw new Error('the node was stopped while starting');
  }

  /** The start, step by step; each step's comments say why it comes where it does. */
  async #open(): Promise<void> {
    const { config, logger } = this;
    this.#writeDb = openDatabase(config.db_path, { busyTimeoutMs: config.busy_timeout, readonly: false });
    this.#digest = await RowDigest.create();
    this.#capture = this.#installCapture();
    this.#logCapture(this.#capture, true);
    // Versions survive restarts: never below one this node applied or took before.
    this.clock.observe(maxIndexedVersion(this.#writeDb));
    this.#readDb = openDatabase(config.db_path, { busyTimeoutMs: config.busy_timeout, readonly: true });
    const { servers, natsConfig } = await this.#startNats();
    await this.#connect(servers, natsConfig);
    await this.#registerNode();
    const replaced = await this.#openStreams();
    const origins = await this.#openOrigins();
    this.#openLocal();
    await this.#openObservability();
    // Decide on a restore (invariant 8) before anything publishes or applies.
    this.#snapshots = new NodeSnapshots({
      config,
      logger,
      metrics: this.metrics,
      nodeId: this.nodeId,
      nc: this.#nc!,
      writer: this.writer,
      display: this.#options.progressDisplay,
    });
    await this.#snapshots.checkRestore(replaced);
    await this.#openPublisher(origins);
    await this.#restoreIfNeeded();
    await this.#openConsumers(origins);
    await this.#openVerify();
    this.#watchLocal();
    logger.info(
      {
        db: config.db_path,
        shards: config.replication_log.shards,
        publish: config.publish,
        replicate: config.replicate,
        nats: servers.map(redactUrl),
      },
      'HarmonyLite node started',
    );
  }

  /** The embedded nats-server when no `[nats] urls` are set: the servers to connect to and how. */
  async #startNats(): Promise<{ servers: string[]; natsConfig: Config['nats'] }> {
    const { config, logger } = this;
    let servers = config.nats.urls;
    let natsConfig = config.nats;
    if (servers.length === 0) {
      const storeDir =
        config.nats.store_dir !== ''
          ? config.nats.store_dir
          : join(dirname(config.db_path), `${basename(config.db_path)}-nats`);
      mkdirSync(storeDir, { recursive: true });
      const auth = embeddedClientAuth(config.nats, storeDir);
      if (auth !== undefined) natsConfig = auth.nats;
      this.#server = new EmbeddedNatsServer({
        // The readiness probe authenticates like the node (server_config may require auth or TLS).
        probe: probeOptions(natsConfig),
        ...(auth === undefined ? {} : { extraConfig: auth.serverConfig }),
        binary: config.nats.server_binary,
        storeDir,
        bindAddress: config.nats.bind_address,
        serverName: `harmonylite-${this.nodeId}`,
        ...(this.#options.clusterAddress !== undefined
          ? { clusterAddress: this.#options.clusterAddress }
          : {}),
        ...this.#clusterRoutes(),
        ...(config.nats.route_cert_file !== ''
          ? {
              routeTls: {
                certFile: config.nats.route_cert_file,
                keyFile: config.nats.route_key_file,
                ...(config.nats.route_ca_file !== '' ? { caFile: config.nats.route_ca_file } : {}),
              },
            }
          : {}),
        ...(this.#options.leafServers !== undefined ? { leafServers: this.#options.leafServers } : {}),
        ...(config.nats.server_config !== '' ? { configFile: config.nats.server_config } : {}),
        ...(config.nats.max_payload > 0 ? { maxPayload: config.nats.max_payload } : {}),
        logger: logger.child({ component: 'nats-server' }),
        // A clustered node's JetStream waits for its peers; the client connection retries until then.
        waitForJetStream: (this.#options.clusterPeers?.length ?? 0) === 0,
      });
      await this.#server.open();
      this.#checkOpen();
      servers = [this.#server.clientUrl];
      logger.info(
        {
          url: this.#server.clientUrl,
          store: storeDir,
          ...(auth?.credentialsFile === undefined ? {} : { credentials: auth.credentialsFile }),
        },
        'embedded nats-server started',
      );
    }
    return { servers, natsConfig };
  }

  async #connect(servers: string[], natsConfig: Config['nats']): Promise<void> {
    const { logger } = this;
    this.#nc = await connectNats(
      natsConfig,
      servers,
      `harmonylite-${this.nodeId}`,
      logger,
      this.#abort.signal,
    );
    this.#checkOpen();
    this.#setNatsUp(true);
    void this.#watchNats(this.#nc);
    this.#jsm = await this.#withJetStream('answer', () => jetstreamManager(this.#nc!));
    this.#js = jetstream(this.#nc);
  }

  async #registerNode(): Promise<void> {
    const { config, logger } = this;
    const rl = this.config.replication_log;
    // Before the streams exist or anything is published: the settings match, the node id is ours.
    this.#identity = new NodeIdentity({
      nc: this.#nc!,
      nodeId: this.nodeId,
      dbPath: config.db_path,
      streamPrefix: config.nats.stream_prefix,
      replicas: rl.replicas,
      settings: {
        subject_prefix: config.nats.subject_prefix,
        hashing: SHARD_HASHING,
        shard_by_table: rl.shard_by_table,
        shards: rl.shards,
        compress: rl.compress,
      },
      logger,
      signal: this.#abort.signal,
    });
    await this.#withJetStream('register the node', () => this.#identity!.open());
    this.#checkOpen();
  }

  async #openStreams(): Promise<ReplacedStream[]> {
    const { config, logger } = this;
    const rl = this.config.replication_log;
    this.#ensureStreams = () =>
      ensureStreams(
        this.#jsm!,
        {
          streamPrefix: config.nats.stream_prefix,
          subjectPrefix: config.nats.subject_prefix,
          shards: rl.shards,
          maxEntries: rl.max_entries,
          replicas: rl.replicas,
          duplicateWindowMs: rl.duplicate_window,
          updateExisting: rl.update_existing,
          // Streams found and consumed are made again if lost (a wiped store), like our own.
          alsoShards: [...this.#consumed],
        },
        logger,
      );
    // Listed before ours are created: a count that differs from the existing streams' is logged.
    await this.#withJetStream('list the streams', () => this.#findStreams(true));
    await this.#withJetStream('create the streams', this.#ensureStreams);

    this.#checkOpen();
    // Before positions are read (restore plan, consumers): a recreated stream starts again at 1.
    let replaced: ReplacedStream[] = [];
    if (config.replicate) {
      this.#streamIds = new StreamIdentities(
        { db: this.#writeDb!, jsm: this.#jsm!, writer: this.writer, logger, metrics: this.metrics },
        {
          streams: new Map([...this.#consumed].map((s) => [s, streamName(config.nats.stream_prefix, s)])),
        },
      );
      await this.#withJetStream('check the streams', () => this.#streamIds!.reconcile());
      // Found now, or by this node while it ran (no restore then): it may have been behind in the old streams.
      replaced = await this.#streamIds.restoreDue();
    }
    return replaced;
  }

  async #openOrigins(): Promise<OriginSigning> {
    const { config, logger } = this;
    const rl = this.config.replication_log;
    const origins = await this.#withJetStream('register the node key', () =>
      openOriginSigning(this.#js!, {
        nodeId: this.nodeId,
        dbPath: config.db_path,
        streamPrefix: config.nats.stream_prefix,
        replicas: rl.replicas,
        verify: rl.verify_origins,
        trustedKeys: rl.trusted_keys,
      }),
    );
    logger.info(
      {
        trusted_key_entry: origins.entry,
        verify_origins: rl.verify_origins,
        trusted_only: origins.trustedOnly,
      },
      origins.trustedOnly
        ? 'node key loaded; batches verify only against [replication_log] trusted_keys'
        : 'node key loaded; batches verify against the keys registered in the cluster (trust on first use)',
    );
    return origins;
  }

  #openLocal(): void {
    const { config } = this;
    const rl = this.config.replication_log;
    this.#pool = new ShardPool(
      [...this.#consumed],
      {
        dbPath: config.db_path,
        busyTimeoutMs: config.busy_timeout,
        includeTables: config.include_tables,
        excludeTables: excludedTables(config),
        nodeId: this.nodeId,
        clock: this.clock.state,
        localWrites: config.publish,
        maxClockSkewMs: config.max_clock_skew,
      },
      { workerHeapMb: rl.worker_heap_mb },
    );
    this.#detector = new ChangeDetector({
      dbPath: config.db_path,
      db: this.#readDb!,
      safetyPollMs: 100,
      pollingIntervalMs: config.polling_interval,
    });
    // No baseline here: the first schema check after the detector opens re-runs the
    // (idempotent) install, catching tables created while the node was starting.
    this.#scanner = new ChangelogScanner(this.#readDb!);
  }

  async #openObservability(): Promise<void> {
    const { config, logger } = this;
    // Started before a restore may wait (its health and metrics show the wait), closed first;
    // see src/node/node-observability.ts.
    this.#observability = new NodeObservability({
      config,
      logger,
      metrics: this.metrics,
      nodeId: this.nodeId,
      js: this.#js!,
      jsm: this.#jsm!,
      writer: this.writer,
      status: () => this.status(),
      shards: () => this.#consumers,
      routes: new Map([['/replicated', replicatedHandler(() => this.#verify?.waiter)]]),
    });
    await this.#observability.open();
  }

  async #openPublisher(origins: OriginSigning): Promise<void> {
    const { config, logger } = this;
    const rl = this.config.replication_log;
    if (config.publish) {
      const maxPayload = this.#nc!.info?.max_payload ?? 1024 * 1024;
      this.#publisher = new Publisher(
        {
          scanner: this.#scanner!,
          outbox: new OutboxStore(this.#writeDb!, {
            busyTimeoutMs: config.busy_timeout,
            writer: this.writer,
          }),
          writer: this.writer,
          js: this.#js!,
          hasher: await createShardHasher(rl.shards),
          logger: logger.child({ component: 'publisher' }),
          metrics: this.metrics,
          clock: this.clock,
          seqs: this.#identity!.seqs,
          sign: origins.sign,
        },
        {
          nodeId: this.nodeId,
          shards: rl.shards,
          subjectPrefix: config.nats.subject_prefix,
          compress: rl.compress,
          scanMaxChanges: config.scan_max_changes,
          maxBatchChanges: rl.max_batch_changes,
          ...(rl.shard_by_table.length > 0 ? { shardByTable: new TableFilter(rl.shard_by_table, []) } : {}),
          // Headroom under max_payload for headers and the (rare) zstd expansion of incompressible data.
          maxBatchBytes:
            rl.max_batch_bytes > 0
              ? Math.min(rl.max_batch_bytes, maxPayload - 4096)
              : Math.floor(maxPayload / 2),
          publishTimeoutMs: config.nats.publish_timeout,
          ...(this.#options.clock !== undefined ? { clock: this.#options.clock } : {}),
        },
      );
      await this.#publisher.open();
    }
  }

  async #restoreIfNeeded(): Promise<void> {
    const { config } = this;
    // Own pending changes are published first; consumers then start from the snapshot.
    await this.#snapshots!.restoreIfNeeded({
      wakePublisher: () => this.#publisher?.wake(),
      onRestored: () => {
        this.clock.observe(maxIndexedVersion(this.#writeDb!));
        // The snapshot carries no node id: this database keeps the one it was started with.
        if (config.node_id === 0) keepNodeId(this.#writeDb!, this.nodeId);
        this.#scanner?.invalidate();
        this.#pool?.schemaChanged();
      },
    });
    await this.#streamIds?.restoreChecked();
    this.#snapshots!.start();
    // Migrations this node missed apply before any shard replays (a failure holds, loudly, and the start goes on).
    await this.#openMigrations();
    this.#checkOpen();
  }

  async #openConsumers(origins: OriginSigning): Promise<void> {
    const { config, logger } = this;
    const rl = this.config.replication_log;
    if (config.replicate) {
      const [js, pool] = [this.#js!, this.#pool!];
      // One for all shards: an origin's reservation covers all of its shards.
      const seqCeiling = new OriginSeqCeiling(
        reservedSeqReader(this.#jsm!, clusterBucket(config.nats.stream_prefix)),
      );
      this.#newConsumer = (shard) =>
        new ShardConsumer(
          {
            js,
            pool,
            writer: this.writer,
            logger: logger.child({ component: 'consumer' }),
            metrics: this.metrics,
            ...(origins.verifier === undefined ? {} : { verifier: origins.verifier }),
            seqCeiling,
          },
          {
            shard,
            stream: streamName(config.nats.stream_prefix, shard),
            maxBatchMessages: 500,
            schemaRetryMs: config.schema_retry_interval,
            maxHoldMs: rl.max_hold,
            busyTimeoutMs: config.busy_timeout,
          },
        );
      for (const shard of [...this.#consumed].sort((a, b) => a - b)) {
        const c = this.#newConsumer(shard);
        await c.open();
        this.#consumers.push(c);
      }
      // Streams another node adds later (restarted with more shards) are consumed once found.
      this.#timers.push(setInterval(() => this.#discoverStreams(), STREAM_DISCOVERY_MS).unref());
    }
  }

  #watchLocal(): void {
    const { config } = this;
    this.#detector!.onChange(() => {
      this.#publisher?.wake();
      this.#checkSchema();
    });
    this.#detector!.open();
    // A table created between the first install and now would otherwise wait for the next schema change.
    this.#checkSchema();
    this.#timers.push(setInterval(() => void this.#cleanup(), config.cleanup_interval).unref());
    this.#timers.push(setInterval(() => void this.#housekeeping(), 1000).unref());
  }

  async #openVerify(): Promise<void> {
    const db = openDatabase(this.config.db_path, { busyTimeoutMs: this.config.busy_timeout, readonly: true });
    const waiter = new WriteWaiter({
      nodeId: this.nodeId,
      db,
      nc: this.#nc!,
      streamPrefix: this.config.nats.stream_prefix,
      acked: () => this.#publisher?.ackedSeq ?? new Map<number, number>(),
      // A key listing may repeat a key being updated meanwhile: each node once.
      otherNodes: async () => [
        ...new Set(
          ((await readNodeStatuses(this.#nc!, statusBucket(this.config.nats.stream_prefix))) ?? [])
            .filter((r) => r.node_id !== this.nodeId && r.replicate)
            .map((r) => r.node_id),
        ),
      ],
    });
    const responder = new VerifyResponder({
      nc: this.#nc!,
      db,
      digest: this.#digest!,
      hasher: await DigestHasher.create(),
      logger: this.logger.child({ component: 'verify' }),
      host: {
        nodeId: this.nodeId,
        streamPrefix: this.config.nats.stream_prefix,
        schemas: () => this.#capture?.tables ?? [],
        positions: () =>
          Object.fromEntries(this.#consumers.map((c) => [String(c.options.shard), c.position])),
        pending: () => this.#scanner?.countPending() ?? 0,
        enqueueRecords:
          this.#publisher === undefined
            ? undefined
            : (table, items) => this.#publisher!.enqueueRecords(table, items),
        waiter,
        reconcile: async (table) => {
          const schema = this.#capture?.tables.find((t) => t.name === table);
          if (schema === undefined) return 0;
          const w = this.#writeDb!;
          const r = await this.writer.run(() =>
            whenWriteLockFree(w, this.config.busy_timeout, () =>
              w
                .transaction(() =>
                  reconcileIndex(w, schema, {
                    digest: this.#digest!,
                    nodeId: this.nodeId,
                    log: this.config.publish,
                    backfill: false,
                  }),
                )
                .immediate(),
            ),
          );
          this.#publisher?.wake();
          return r.escaped;
        },
      },
    });
    responder.open();
    this.#verify = { responder, waiter, db };
    if (this.config.verify.interval > 0) {
      this.#verify.periodic = new PeriodicVerify(
        {
          nc: this.#nc!,
          jsm: this.#jsm!,
          nodeId: this.nodeId,
          streamPrefix: this.config.nats.stream_prefix,
          shards: this.config.replication_log.shards,
          logger: this.logger.child({ component: 'verify' }),
          setDiffering: (n) => this.metrics.verifyDifferingKeys.set(n),
        },
        this.config.verify.interval,
      );
      this.#verify.periodic.open();
    }
  }

  /**
   * JetStream may need a moment after the server starts: a cluster elects a meta
   * leader once a quorum of servers is up, and an R3 stream can be placed only
   * when three are ("no suitable peers for placement"). An embedded clustered
   * server waits for its peers without a time limit (the node must not exit:
   * its server is one of the peers the others wait for); otherwise 60 s.
   */
  /**
   * Routes of the embedded cluster: credentials in the `-cluster-peers` URLs authenticate
   * every route (the embedded server warns about a route port beyond loopback left open).
   */
  #clusterRoutes(): Pick<EmbeddedNatsServerOptions, 'clusterPeers' | 'clusterAuthorization'> {
    const given = this.#options.clusterPeers;
    if (given === undefined) return {};
    const { peers, authorization } = splitRouteCredentials(given);
    return authorization !== undefined
      ? { clusterPeers: peers, clusterAuthorization: authorization }
      : { clusterPeers: peers };
  }

  async #withJetStream<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const clustered = this.#server !== undefined && (this.#options.clusterPeers?.length ?? 0) > 0;
    const start = Date.now();
    let warnedAt = start;
    for (;;) {
      try {
        return await fn();
      } catch (err) {
        const msg = errorMessage(err);
        if (
          !isJetStreamUnavailable(err) ||
          this.#abort.signal.aborted ||
          (!clustered && Date.now() - start > 60_000)
        )
          throw err;
        if (Date.now() - warnedAt >= 10_000) {
          warnedAt = Date.now();
          this.logger.warn(
            {
              err: msg,
              waited_s: Math.round((Date.now() - start) / 1000),
              ...(clustered ? { peers: splitRouteCredentials(this.#options.clusterPeers!).peers } : {}),
            },
            `waiting for JetStream to ${what}${clustered ? ' (are the cluster peers running?)' : ''}`,
          );
        } else {
          this.logger.debug({ err: msg }, 'JetStream not ready yet; retrying');
        }
        await sleep(250, undefined, { signal: this.#abort.signal });
      }
    }
  }

  async #watchNats(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') this.#setNatsUp(false);
      else if (s.type === 'reconnect') {
        this.#setNatsUp(true);
        this.metrics.natsReconnects.inc();
        this.#publisher?.wake();
        this.#publisher?.retryNow();
        for (const c of this.#consumers) c.reconnected();
        this.#streamRecovery ??= this.#recoverStreams().finally(() => (this.#streamRecovery = undefined));
        this.#discoverStreams();
      }
    }
  }

  /**
   * Adds to `#consumed` every change stream under the prefix (a node consumes
   * them all, whatever its own `shards`: a rolling change of the count leaves
   * nodes publishing to streams beyond it). Returns the shards found new.
   */
  async #findStreams(initial = false): Promise<number[]> {
    const { config } = this;
    const own = config.replication_log.shards;
    const existing = await listShardStreams(this.#jsm!, config.nats.stream_prefix);
    const added: number[] = [];
    for (const shard of [...shardNumbers(own), ...existing]) {
      if (this.#consumed.has(shard)) continue;
      this.#consumed.add(shard);
      added.push(shard);
    }
    const beyond = [...this.#consumed].filter((s) => s > own).sort((a, b) => a - b);
    this.metrics.streamsConsumed.set(this.#consumed.size);
    this.metrics.streamsBeyondShards.set(beyond.length);
    const addedBeyond = added.filter((s) => s > own);
    if (addedBeyond.length > 0)
      this.logger.warn(
        {
          shards: own,
          streams: addedBeyond.map((s) => streamName(config.nats.stream_prefix, s)),
          consumed: this.#consumed.size,
        },
        `change streams exist beyond this node's shards = ${own}: another node publishes (or published) with more shards; consuming them too. Allowed during a rolling change of the shard count; set the same shards on every node when it is done`,
      );
    const highest = Math.max(0, ...existing);
    if (initial && highest > 0 && highest < own)
      this.logger.warn(
        { shards: own, existing: highest },
        `this node publishes with shards = ${own}, the existing change streams go up to ${highest}: this node adds streams ${highest + 1}..${own}, which the other nodes consume too. Allowed during a rolling change of the shard count; set the same shards on every node when it is done`,
      );
    return added;
  }

  /** Looks for new change streams and starts consuming them (one run at a time; failures retried next time). */
  #discoverStreams(): void {
    if (this.#discovery !== undefined || this.#newConsumer === undefined || this.#abort.signal.aborted)
      return;
    const newConsumer = this.#newConsumer;
    this.#discovery = (async () => {
      const added = await this.#findStreams();
      for (const shard of added) {
        this.#checkOpen();
        const stream = streamName(this.config.nats.stream_prefix, shard);
        // Recorded before the consumer reads its position (0: a stream new to this node starts at 1).
        this.#streamIds?.add(shard, stream);
        await this.#streamIds?.reconcile([shard]);
        this.#pool!.add(shard);
        const c = newConsumer(shard);
        await c.open();
        this.#consumers.push(c);
        this.logger.info({ shard, stream }, 'consuming a new change stream');
      }
    })()
      .catch((err: unknown) => {
        // Not consumed yet: the next pass finds it again.
        for (const shard of this.#consumed)
          if (!this.#consumers.some((c) => c.options.shard === shard)) this.#consumed.delete(shard);
        if (!this.#abort.signal.aborted)
          this.logger.warn({ err: errorMessage(err) }, 'looking for new change streams failed; retrying');
      })
      .finally(() => (this.#discovery = undefined));
  }

  /** After a reconnect: streams lost or recreated meanwhile are made again and replayed (recover-streams.ts). */
  async #recoverStreams(): Promise<void> {
    if (this.#streamIds === undefined || this.#newConsumer === undefined) return;
    const newConsumer = this.#newConsumer;
    await recoverStreams({
      identities: this.#streamIds,
      ensureStreams: () => this.#withJetStream('create the streams', this.#ensureStreams!),
      restartConsumer: async (shard, reconcile) => {
        const i = this.#consumers.findIndex((c) => c.options.shard === shard);
        await this.#consumers[i]?.close();
        await reconcile();
        this.#checkOpen();
        const c = newConsumer(shard);
        await c.open();
        if (i >= 0) this.#consumers[i] = c;
      },
      retry: (what, fn) => this.#withJetStream(what, fn),
      logger: this.logger,
    }).catch((err: unknown) => {
      if (!this.#abort.signal.aborted)
        this.logger.warn({ err }, 'recovering replaced streams failed; retried at the next reconnect');
    });
  }

  async #openMigrations(): Promise<void> {
    const { config } = this;
    await this.#withJetStream('create the migration stream', () =>
      ensureMigrationStream(this.#jsm!, {
        streamPrefix: config.nats.stream_prefix,
        subjectPrefix: config.nats.subject_prefix,
        replicas: config.replication_log.replicas,
        duplicateWindowMs: config.replication_log.duplicate_window,
      }),
    );
    this.#migrations = new MigrationFollower(
      {
        nc: this.#nc!,
        jsm: this.#jsm!,
        db: this.#writeDb!,
        writer: this.writer,
        logger: this.logger.child({ component: 'migrations' }),
        metrics: this.metrics,
        filter: this.#filter,
        install: () => this.#installOptions(),
        onApplied: (state) => this.#captureChanged(state),
      },
      {
        nodeId: this.nodeId,
        streamPrefix: config.nats.stream_prefix,
        subjectPrefix: config.nats.subject_prefix,
        retryMs: config.schema_retry_interval,
      },
    );
    await this.#migrations.open();
  }

  #setNatsUp(up: boolean): void {
    this.#natsUp = up;
    this.metrics.natsConnected.set(up ? 1 : 0);
  }

  #installOptions(): InstallOptions {
    return {
      captureWrites: this.config.publish,
      index: {
        digest: this.#digest!,
        nodeId: this.nodeId,
        progress: (table, rows) =>
          this.logger.info({ table, rows }, 'checking rows against the replicated-state index'),
      },
    };
  }

  #installCapture(): CaptureState {
    return installCapture(this.#writeDb!, this.#filter, this.#installOptions());
  }

  /** Capture was reinstalled for a new schema: everything that caches the schema reads it again. */
  #captureChanged(state: CaptureState): void {
    this.#capture = state;
    this.#logCapture(state, false);
    this.#scanner?.invalidate();
    this.#pool?.schemaChanged();
    for (const c of this.#consumers) c.schemaChanged();
    this.#publisher?.wake();
  }

  #logCapture(state: CaptureState, initial: boolean): void {
    if (this.#writeDb !== undefined) this.#captureLog.report(this.#writeDb, state, initial);
  }

  /** Re-installs capture when the schema changed (coalesced: at most one run at a time, one queued). */
  #checkSchema(): void {
    if (this.#schemaCheck !== undefined) {
      this.#schemaCheckAgain = true;
      return;
    }
    // Cleared in finally, after the assignment: a run that never awaits must not leave a
    // settled promise behind (that silently stopped all later schema checks).
    const run = (async () => {
      do {
        this.#schemaCheckAgain = false;
        try {
          if (!this.#detector?.schemaChanged()) continue;
          this.#captureChanged(await this.writer.run(() => this.#installCapture()));
        } catch (err) {
          this.logger.error({ err }, 'updating capture after a schema change failed; will retry');
        }
      } while (this.#schemaCheckAgain && !this.#abort.signal.aborted);
    })();
    this.#schemaCheck = run.finally(() => {
      this.#schemaCheck = undefined;
    });
  }

  async #cleanup(): Promise<void> {
    if (this.#cleaning) return; // the previous pass is still going (a large backlog)
    this.#cleaning = true;
    try {
      const db = this.#writeDb!;
      const now = Date.now();
      const window = { cutoff: now - this.config.cleanup_interval, now };
      const tables = await this.writer.run(() => cleanupTables(db));
      let n = 0;
      for (let at: CleanupPosition | undefined; !this.#abort.signal.aborted;) {
        // Each step its own writer job: applies and the publisher go on in between.
        let took = 0;
        const step = await this.writer.run(() =>
          whenWriteLockFree(db, this.config.busy_timeout, () => {
            const t0 = performance.now();
            const r = cleanupStep(db, tables, window, CLEANUP_SPAN, at);
            took = performance.now() - t0;
            return r;
          }),
        );
        n += step.deleted;
        this.metrics.cleanedUp.inc(step.deleted);
        if ((at = step.next) === undefined) break;
        if (step.deleted === 0) continue; // read only: no lock was taken
        // A fifth of the time at most: an application's commit that finds the lock taken retries
        // after 1, 2, 5, 10 ms (SQLite's busy handler); at half the time it often met the next step
        // again and waited ~18 ms. Capped: a slow step (a busy disk) must not stall the pass.
        await sleep(Math.min(CLEANUP_MAX_PAUSE_MS, Math.max(2, 4 * took)), undefined, {
          signal: this.#abort.signal,
        }).catch(() => {});
      }
      if (n > 0) this.logger.info({ rows: n }, 'Cleaned up DB change logs');
      const pruned = await this.writer.run(() =>
        whenWriteLockFree(db, this.config.busy_timeout, () =>
          pruneConflicts(db, {
            olderThan: now - this.config.conflict_log_retention,
            maxRows: this.config.conflict_log_max_rows,
          }),
        ),
      );
      if (pruned > 0) this.logger.info({ rows: pruned }, 'pruned the conflict log');
    } catch (err) {
      this.logger.warn({ err: errorMessage(err) }, 'cleanup of change logs failed; will retry');
    } finally {
      this.#cleaning = false;
    }
  }

  async #housekeeping(): Promise<void> {
    this.metrics.writerQueueDepth.set(this.writer.depth);
    if (this.#pool) this.metrics.poolUtilization.set(this.#pool.utilization());
    let walBytes = 0;
    try {
      walBytes = statSync(`${this.config.db_path}-wal`).size;
    } catch {
      return;
    }
    this.metrics.walBytes.set(walBytes);
    // Smaller than at the last complete checkpoint: truncated since (by us or the application).
    if (this.#walCheckpointed !== undefined && walBytes < this.#walCheckpointed)
      this.#walCheckpointed = undefined;
    if (walBytes < this.config.wal_checkpoint_bytes) return;
    // The -wal file keeps its size after a complete checkpoint (SQLite writes it again from the start):
    // only a file grown past that size, or a checkpoint that did not finish, needs another one.
    // Otherwise a node past the threshold once would start a checkpoint thread every second, forever.
    if (this.#walCheckpointed !== undefined && walBytes <= this.#walCheckpointed) return;
    // PASSIVE never waits for readers or writers; TRUNCATE once the WAL is far too big. In a worker
    // thread: copying a large WAL into the database took ~0.4 s, which on this thread stalled
    // publishing and applying (p99 latency). PASSIVE needs no write lock, so it runs beside applies.
    if (this.#checkpointing) return;
    const mode = walBytes > 4 * this.config.wal_checkpoint_bytes ? 'TRUNCATE' : 'PASSIVE';
    // A TRUNCATE that readers keep from finishing gives up soon (it holds the writer queue) and is tried again.
    const task = { dbPath: this.config.db_path, busyTimeoutMs: 100, mode } as const;
    this.#checkpointing = true;
    try {
      // Before a TRUNCATE, a PASSIVE copies the frames without the lock: the TRUNCATE that follows holds
      // the writer queue (and SQLite's write lock) only to reset the file. Copying a WAL of 200k rows'
      // changes under it stalled the application's commits and replication by ~50 ms (bench, after a burst).
      if (mode === 'TRUNCATE') {
        await checkpointInWorker({ ...task, mode: 'PASSIVE' });
        if (this.#abort.signal.aborted) return; // closing: the writer queue is draining
      }
      const r = await (mode === 'PASSIVE'
        ? checkpointInWorker(task)
        : this.writer.run(() => checkpointInWorker(task)));
      this.metrics.walCheckpoints.inc({ mode });
      const complete = !r.busy && r.checkpointedFrames === r.logFrames;
      this.#walCheckpointed = !complete ? undefined : mode === 'TRUNCATE' ? 0 : walBytes;
    } catch (err) {
      this.logger.debug({ err: String(err), mode }, 'checkpoint skipped');
    } finally {
      this.#checkpointing = false;
    }
  }

  status(): NodeStatus {
    return {
      nodeId: this.nodeId,
      tables: this.tables,
      pending: this.#scanner?.countPending() ?? 0,
      ...(this.#readDb === undefined ? {} : { recentConflicts: recentConflicts(this.#readDb) }),
      natsConnected: this.#natsUp,
      streamProblems:
        this.#streamIds?.problems(
          (shard) => this.#consumers.find((c) => c.options.shard === shard)?.position,
        ) ?? [],
      lastPublishAt: this.#publisher?.lastPublishAt ?? 0,
      schemaHash: this.#captureLog.schemaHash,
      shards: this.#consumers.map((c) => ({
        shard: c.options.shard,
        position: c.position,
        state: c.state,
        lastApplyAt: c.lastApplyAt,
        duplicatesSkipped: c.duplicatesSkipped,
        deadLetters: c.deadLetters,
      })),
      ...(this.#snapshots?.waiting === undefined ? {} : { waitingForSnapshot: this.#snapshots.waiting }),
      ...(this.#migrations === undefined
        ? {}
        : {
            migrations: {
              position: this.#migrations.position,
              ...(this.#migrations.held === undefined ? {} : { held: this.#migrations.held }),
            },
          }),
      ...(this.#verify?.periodic?.problem === undefined
        ? {}
        : { verifyProblem: this.#verify.periodic.problem }),
      ...(this.#verify?.periodic?.last === undefined ? {} : { lastVerify: this.#verify.periodic.last }),
    };
  }

  /** Graceful stop: finishes the current step of every loop, then closes in reverse order of open. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#abort.abort();
    await this.#opening?.catch(() => undefined);
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    await this.#observability?.close();
    await this.#verify?.periodic?.close();
    this.#verify?.responder.close();
    await this.#snapshots?.close();
    await this.#streamRecovery;
    await this.#discovery;
    this.#detector?.close();
    await this.#publisher?.close();
    await this.#migrations?.close();
    await Promise.all(this.#consumers.map((c) => c.close()));
    this.#consumers = [];
    await this.#schemaCheck;
    await this.writer.drain();
    await this.#pool?.close();
    await this.#identity
      ?.close()
      .catch((err: unknown) => this.logger.warn({ err }, 'releasing the node id failed'));
    // A drain needs the server; while it is unreachable (or frozen) it would wait forever.
    const nc = this.#nc;
    if (nc !== undefined && !nc.isClosed()) {
      const drained = await Promise.race([
        nc.drain().then(
          () => true,
          () => false,
        ),
        sleep(5000, false, { ref: false }),
      ]);
      if (!drained) await nc.close().catch(() => undefined);
    }
    this.#setNatsUp(false);
    await this.#server?.close();
    this.#verify?.db.close();
    this.#readDb?.close();
    this.#writeDb?.close();
    this.logger.info('HarmonyLite node stopped');
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
