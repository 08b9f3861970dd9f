import type { JetStreamManager } from '@nats-io/jetstream';
import Database from 'better-sqlite3';
import { isInternalName, OUTBOX, POSITIONS, quoteIdent as q } from '../cdc/names.ts';
import { TableFilter } from '../cdc/table-filter.ts';
import type { Config } from '../config/config.ts';
import { excludedTables as excludedTablePatterns } from '../config/excluded-tables.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { shardNumbers, streamName } from '../nats/naming.ts';
import type { WriterQueue } from '../sqlite/writer-queue.ts';
import { swapDatabase } from './database-swap.ts';
import {
  carryOverLocalState,
  lastGlobalId,
  unpublishedChanges,
  type PrepareRestoreOptions,
} from './prepare-restore-file.ts';
import { restoreCandidates, shardsBehind, type BehindShard, type StreamRange } from './restore-plan.ts';
import { listSnapshots } from './snapshot-catalog.ts';
import { errorMessage, SnapshotError } from './snapshot-error.ts';
import { SnapshotKey, snapshotKeyMismatch } from './snapshot-key.ts';
import { encryptionContext, type SnapshotManifest } from './snapshot-manifest.ts';
import { SnapshotStoreError, type SnapshotStore } from './snapshot-store.ts';
import { assertFreeSpace, diskError, SnapshotTempDir, snapshotTempParent } from './snapshot-temp-dir.ts';
import { runSnapshotTask } from './snapshot-worker.ts';
import { TransferProgress } from './transfer-progress.ts';

export interface SnapshotRestorerDeps {
  readonly config: Config;
  readonly nodeId: number;
  /** The store, opened on first use. */
  readonly store: () => Promise<SnapshotStore>;
  readonly jsm: JetStreamManager;
  /** The node's writer queue: the restore's writes never interleave with the daemon's own. */
  readonly writer: WriterQueue;
  readonly logger: Logger;
  readonly metrics?: Metrics | undefined;
  readonly terminal?: NodeJS.WriteStream | undefined;
  /** How long to wait for this node's pending changes to be published before a swap. Default 60 s. */
  readonly drainTimeoutMs?: number;
  /** Download-and-verify attempts per snapshot before trying an older one. Default 3. */
  readonly attempts?: number;
}

/** A restore that `check()` found necessary, with the snapshots that may serve it, newest first. */
export interface RestoreDecision {
  readonly behind: readonly BehindShard[];
  readonly candidates: readonly SnapshotManifest[];
}

export interface RestoreOptions {
  readonly signal?: AbortSignal | undefined;
  /** Makes the running publisher look for new local changes; called while the restore waits for it. */
  readonly wakePublisher?: (() => void) | undefined;
}

/** A verified snapshot file, prepared for the swap. */
interface PreparedFile {
  readonly manifest: SnapshotManifest;
  readonly path: string;
}

/**
 * Restores a snapshot at node start (invariant 8), in two steps around the
 * start of the publisher:
 * 1. `check()`, before the publisher starts: a restore is needed when a
 *    stream discarded messages after this node's stored position; it picks
 *    the snapshots that reach every stream's first kept message (or fails
 *    with an error that says none does), and raises this node's outbox
 *    sequences to what those snapshots record of it, so its next batches are
 *    never dropped as duplicates.
 * 2. `restore()`, publisher running, consumers not started: downloads the
 *    newest candidate, waits until this node's own pending changes are
 *    published (or fails, leaving the database unchanged, when they cannot
 *    be), verifies the file (decryption with the configured key when
 *    encrypted, checksum, `quick_check`; a damaged download is retried,
 *    then an older candidate is tried; a snapshot whose encryption does not
 *    match the configured key is skipped at once), prepares it (page size,
 *    capture) and swaps it in with the backup API; under the swap's write
 *    lock it first copies this node's local replication state (changes that
 *    slipped in meanwhile, outbox, dead letters) into the file. Consumers then
 *    start from the snapshot's positions + 1.
 */
export class SnapshotRestorer {
  readonly #deps: SnapshotRestorerDeps;
  #wakePublisher: () => void = () => undefined;

  constructor(deps: SnapshotRestorerDeps) {
    this.#deps = deps;
  }

  /** The kept range of every shard stream. */
  async streamRanges(signal?: AbortSignal): Promise<StreamRange[]> {
    const { config, jsm } = this.#deps;
    const streams: StreamRange[] = [];
    for (const shard of shardNumbers(config.replication_log.shards)) {
      signal?.throwIfAborted();
      const info = await jsm.streams.info(streamName(config.nats.stream_prefix, shard));
      streams.push({ shard, firstSeq: info.state.first_seq, lastSeq: info.state.last_seq });
    }
    return streams;
  }

  async check(signal?: AbortSignal): Promise<RestoreDecision | undefined> {
    const { config, logger } = this.#deps;
    const shards = config.replication_log.shards;
    const streams = await this.streamRanges(signal);
    const positions = this.#withDb(true, (db) => readPositions(db));
    const behind = shardsBehind(streams, positions);
    if (behind.length === 0) return undefined;
    const store = await this.#deps.store();
    const manifests = await listSnapshots(store, {
      signal,
      onSkipped: (name, reason) => logger.warn({ object: name, reason }, 'snapshot skipped'),
    });
    const candidates = restoreCandidates(behind, streams, manifests, {
      streamPrefix: config.nats.stream_prefix,
      shards,
      storeDescription: store.description,
    });
    logger.warn(
      { behind, snapshot: candidates[0]!.name, store: store.description },
      'the streams discarded messages this node has not applied; restoring a snapshot',
    );
    const localOnly = this.#withDb(true, (db) => excludedTables(db, config));
    if (localOnly.length > 0) {
      logger.warn(
        { tables: localOnly },
        "the restore replaces tables excluded from replication with the snapshot's copy; their local rows are not kept",
      );
    }
    await this.#raiseOutboxSeqs(candidates);
    return { behind, candidates };
  }

  async restore(decision: RestoreDecision, options: RestoreOptions = {}): Promise<SnapshotManifest> {
    const { config, logger, metrics } = this.#deps;
    const { signal } = options;
    this.#wakePublisher = options.wakePublisher ?? (() => undefined);
    const startedAt = performance.now();
    const key = SnapshotKey.fromConfig(config.snapshot);
    const dir = await SnapshotTempDir.create(snapshotTempParent(config));
    const reader = new Database(config.db_path, {
      readonly: true,
      fileMustExist: true,
      timeout: config.busy_timeout,
    });
    try {
      const ready = await this.#downloadVerified(decision.candidates, key, dir, reader, signal);
      await this.#swapIn(ready, signal);
      const { manifest } = ready;
      const durationMs = performance.now() - startedAt;
      metrics?.snapshotDuration.observe({ operation: 'restore' }, durationMs / 1000);
      metrics?.snapshotSize.set(manifest.sizeBytes);
      logger.info(
        {
          name: manifest.name,
          size_bytes: manifest.sizeBytes,
          duration_ms: Math.round(durationMs),
          positions: manifest.positions,
          store: (await this.#deps.store()).description,
        },
        'Snapshot restored',
      );
      return manifest;
    } catch (err) {
      metrics?.snapshotFailures.inc({ operation: 'restore' });
      throw err;
    } finally {
      reader.close();
      await dir.remove();
    }
  }

  /** Receivers drop batches numbered at or below what they applied: never number below the snapshot's record. */
  async #raiseOutboxSeqs(candidates: readonly SnapshotManifest[]): Promise<void> {
    const seen = new Map<number, number>();
    for (const m of candidates)
      for (const o of m.originSeqs)
        if (o.origin === this.#deps.nodeId) seen.set(o.shard, Math.max(seen.get(o.shard) ?? 0, o.seq));
    if (seen.size === 0) return;
    await this.#deps.writer.run(() =>
      this.#withDb(false, (db) => {
        db.transaction(() => {
          for (const [shard, seq] of seen) {
            const row = db
              .prepare(`SELECT seq, payload IS NOT NULL AS busy FROM ${q(OUTBOX)} WHERE shard = ?`)
              .get(shard) as { seq: number; busy: number } | undefined;
            if (row !== undefined && row.seq >= seq) continue;
            if (row?.busy) {
              this.#deps.logger.warn(
                { shard, outbox_seq: row.seq, snapshot_seq: seq },
                'a batch of this node is in flight below what the cluster has seen of it; keeping its number',
              );
              continue;
            }
            db.prepare(
              `INSERT INTO ${q(OUTBOX)} (shard, seq, last_global_id, payload) VALUES (?, ?, NULL, NULL) ` +
                'ON CONFLICT (shard) DO UPDATE SET seq = excluded.seq',
            ).run(shard, seq);
          }
        }).immediate();
      }),
    );
  }

  /** How the verified file is prepared against the live database (see `prepare-restore-file.ts`). */
  #prepareOptions(): Omit<PrepareRestoreOptions, 'path'> {
    const { config } = this.#deps;
    return {
      liveDbPath: config.db_path,
      busyTimeoutMs: config.busy_timeout,
      includeTables: config.include_tables,
      excludeTables: excludedTablePatterns(config),
      captureWrites: config.publish,
    };
  }

  /**
   * Downloads the newest candidate that passes verification (trying each a
   * few times, then older ones) and prepares it once this node's own changes
   * are published.
   */
  async #downloadVerified(
    candidates: readonly SnapshotManifest[],
    key: SnapshotKey | undefined,
    dir: SnapshotTempDir,
    reader: Database.Database,
    signal: AbortSignal | undefined,
  ): Promise<PreparedFile> {
    const { logger, config } = this.#deps;
    const store = await this.#deps.store();
    const attempts = this.#deps.attempts ?? 3;
    let lastError: unknown;
    for (const manifest of candidates) {
      const mismatch = snapshotKeyMismatch(manifest, key);
      if (mismatch !== undefined) {
        lastError = mismatch;
        logger.warn({ object: manifest.dataObject, err: mismatch.message }, 'snapshot refused');
        continue;
      }
      await assertFreeSpace(dir.path, manifest.dataBytes + manifest.sizeBytes);
      for (let attempt = 1; attempt <= attempts; attempt++) {
        signal?.throwIfAborted();
        const downloaded = dir.file(manifest.dataObject);
        const path = dir.file(`${manifest.name}.restore.db`);
        const progress = new TransferProgress({
          operation: 'download',
          objectName: manifest.dataObject,
          totalBytes: manifest.dataBytes,
          logger,
          terminal: this.#deps.terminal,
        });
        try {
          logger.info(
            { object: manifest.dataObject, bytes: manifest.dataBytes, attempt },
            'downloading snapshot',
          );
          try {
            await store.getFile(manifest.dataObject, downloaded, {
              ...(signal ? { signal } : {}),
              onProgress: progress.update,
            });
          } finally {
            progress.done();
          }
          await this.#waitUntilPublished(reader, signal);
          await runSnapshotTask(
            {
              kind: 'verify',
              downloadedPath: downloaded,
              outPath: path,
              compressed: manifest.compressed,
              ...(key === undefined
                ? {}
                : {
                    encryption: { key: key.bytes, context: encryptionContext(manifest) },
                    expectedFacts: { positions: manifest.positions, originSeqs: manifest.originSeqs },
                  }),
              expected: { sha256: manifest.sha256, sizeBytes: manifest.sizeBytes },
              objectName: manifest.dataObject,
              prepare: this.#prepareOptions(),
            },
            { signal },
          );
          return { manifest, path };
        } catch (err) {
          if (signal?.aborted) throw err;
          if (err instanceof SnapshotError && err.code === 'ERR_SNAPSHOT_PENDING_CHANGES') throw err;
          const mapped = diskError(err, snapshotTempParent(config), manifest.dataBytes + manifest.sizeBytes);
          if (mapped instanceof SnapshotError && mapped.code === 'ERR_SNAPSHOT_NO_SPACE') throw mapped;
          lastError = err;
          const gone = err instanceof SnapshotStoreError && err.code === 'ERR_SNAPSHOT_NOT_FOUND';
          // Another key stays another key: trying again cannot help.
          const wrongKey = err instanceof SnapshotError && err.code === 'ERR_SNAPSHOT_KEY';
          logger.warn(
            { object: manifest.dataObject, attempt, err: errorMessage(err) },
            gone ? 'snapshot vanished from the store; trying an older one' : 'snapshot download rejected',
          );
          if (gone || wrongKey) break;
        }
      }
    }
    throw new SnapshotError(
      lastError instanceof SnapshotError ? lastError.code : 'ERR_SNAPSHOT_CORRUPT',
      `no snapshot could be restored; the database is unchanged. Last failure: ${errorMessage(lastError)}`,
      {
        cause: lastError,
        hint:
          lastError instanceof SnapshotError && lastError.code === 'ERR_SNAPSHOT_KEY' && lastError.hint
            ? lastError.hint
            : 'take a new snapshot on a node that is up to date (harmonylite -config FILE -save-snapshot), then start this node again',
      },
    );
  }

  /**
   * Swaps the prepared file in. Under the swap's write lock, before any page
   * is written, this node's local replication state is copied from the live
   * database into the file (`carryOverLocalState`): a change an application
   * made after the publisher caught up is kept and published after the swap,
   * instead of being lost, and nothing can change any more while it is copied.
   */
  async #swapIn(ready: PreparedFile, signal: AbortSignal | undefined): Promise<void> {
    const { config, logger, writer, nodeId } = this.#deps;
    const { manifest, path } = ready;
    const ownOriginSeqs: Record<string, number> = {};
    for (const o of manifest.originSeqs) if (o.origin === nodeId) ownOriginSeqs[String(o.shard)] = o.seq;
    signal?.throwIfAborted();
    try {
      await writer.run(() =>
        swapDatabase({
          sourcePath: path,
          livePath: config.db_path,
          busyTimeoutMs: config.busy_timeout,
          checkLocked: () => {
            const carried = carryOverLocalState({
              sourcePath: path,
              liveDbPath: config.db_path,
              ownOriginSeqs,
            });
            if (carried.droppedColumns.length > 0) {
              logger.warn(
                { columns: carried.droppedColumns },
                "unpublished changes carry columns the snapshot's tables no longer have; those values are not published",
              );
            }
            if (carried.changes > 0)
              logger.info(
                { changes: carried.changes },
                'local changes not published yet are kept across the restore',
              );
          },
        }),
      );
    } catch (err) {
      throw new SnapshotError(
        'ERR_SNAPSHOT_RESTORE',
        `cannot swap snapshot ${manifest.name} into ${config.db_path}; the database is unchanged: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    // The swap wrote every page through the WAL: fold it back into the file now, off the main thread.
    await writer.run(() =>
      runSnapshotTask({ kind: 'checkpoint', dbPath: config.db_path, busyTimeoutMs: config.busy_timeout }),
    );
  }

  /**
   * Resolves once every change this node had captured when the wait began is
   * published (invariant 8: a restore never discards a local write, and the
   * application sees its own writes again right after the swap). Changes made
   * later are carried over by the swap instead, so a steady stream of
   * application writes cannot hold the restore back. Rejects, leaving the
   * database unchanged, when they cannot be published in time.
   */
  async #waitUntilPublished(reader: Database.Database, signal: AbortSignal | undefined): Promise<void> {
    const { config, logger } = this.#deps;
    const timeoutMs = this.#deps.drainTimeoutMs ?? 60_000;
    const deadline = performance.now() + timeoutMs;
    const upToId = lastGlobalId(reader);
    let logged = false;
    for (;;) {
      signal?.throwIfAborted();
      const pending = unpublishedChanges(reader, upToId);
      if (pending === 0) return;
      if (!config.publish) {
        throw new SnapshotError(
          'ERR_SNAPSHOT_PENDING_CHANGES',
          `cannot restore: ${pending} local changes are not published and publish = false; a restore would discard them`,
          { hint: 'start this node once with publish = true so that they are published, then restore' },
        );
      }
      if (performance.now() > deadline) {
        throw new SnapshotError(
          'ERR_SNAPSHOT_PENDING_CHANGES',
          `cannot restore: ${pending} local changes were not published within ${timeoutMs} ms ` +
            '(is NATS reachable?); a restore would discard them, so the database is unchanged',
          { hint: 'check the NATS connection and start this node again' },
        );
      }
      if (!logged) {
        logger.info({ pending }, 'publishing local changes before the restore');
        logged = true;
      }
      // Nothing else wakes the publisher yet: the change detector starts after the restore.
      this.#wakePublisher();
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  #withDb<T>(readonly: boolean, fn: (db: Database.Database) => T): T {
    const { config } = this.#deps;
    const db = new Database(config.db_path, { readonly, fileMustExist: true, timeout: config.busy_timeout });
    try {
      return fn(db);
    } finally {
      db.close();
    }
  }
}

/** Stored position per shard (0 = nothing applied). */
export function readPositions(db: Database.Database): Map<number, number> {
  const exists = db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?").get(POSITIONS);
  if (exists === undefined) return new Map();
  const rows = db.prepare(`SELECT shard, stream_seq FROM ${q(POSITIONS)}`).all() as {
    shard: number;
    stream_seq: number;
  }[];
  return new Map(rows.map((r) => [r.shard, r.stream_seq]));
}

/** User tables this node does not replicate (`include_tables` / `exclude_tables` / `migration_tables`). */
function excludedTables(db: Database.Database, config: Config): string[] {
  const filter = new TableFilter(config.include_tables, excludedTablePatterns(config));
  const names = db
    .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT GLOB 'sqlite_*' ORDER BY name")
    .pluck()
    .all() as string[];
  return names.filter((name) => !isInternalName(name) && !filter.accepts(name));
}
