import type { Config } from '../config/config.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { errorMessage } from '../error-message.ts';
import { publishManifest, pruneSnapshots } from './snapshot-catalog.ts';
import { createSnapshotFile } from './snapshot-creator.ts';
import { SnapshotKey } from './snapshot-key.ts';
import { manifestObjectName, type SnapshotManifest } from './snapshot-manifest.ts';
import type { SnapshotStore } from './snapshot-store.ts';
import { snapshotTempParent } from './snapshot-temp-dir.ts';
import { TransferProgress, type ProgressDisplay } from './transfer-progress.ts';

export interface SaveSnapshotDeps {
  readonly config: Config;
  readonly nodeId: number;
  /** An opened store. */
  readonly store: SnapshotStore;
  readonly logger: Logger;
  readonly metrics?: Metrics | undefined;
  readonly signal?: AbortSignal | undefined;
  /** Shows the upload's progress to a person, if anyone watches. */
  readonly display?: ProgressDisplay | undefined;
  /** See `PruneOptions.orphanGraceMs`. */
  readonly orphanGraceMs?: number | undefined;
}

export interface SavedSnapshot {
  readonly manifest: SnapshotManifest;
  readonly manifestObject: string;
  readonly durationMs: number;
  /** Objects removed by retention afterwards. */
  readonly pruned: readonly string[];
}

/**
 * Takes one snapshot now and stores it: copy (off the main thread; compressed
 * and encrypted as `[snapshot]` says), upload
 * data then manifest, then keep the newest `[snapshot] keep`. Logs "Snapshot
 * saved", or "Unable to save snapshot" with the reason before rejecting.
 * Temporary files are gone when this settles. Retention failures are logged,
 * never fail a save that is already stored.
 */
export async function saveSnapshot(deps: SaveSnapshotDeps): Promise<SavedSnapshot> {
  const { config, store, logger, metrics, signal } = deps;
  const startedAt = performance.now();
  try {
    let progress: TransferProgress | undefined;
    // Read at every save: a replaced key file takes effect without a restart.
    const encryptionKey = SnapshotKey.fromConfig(config.snapshot);
    const created = await createSnapshotFile({
      dbPath: config.db_path,
      busyTimeoutMs: config.busy_timeout,
      nodeId: deps.nodeId,
      streamPrefix: config.nats.stream_prefix,
      shards: config.replication_log.shards,
      compress: config.snapshot.compress,
      encryptionKey,
      tempParent: snapshotTempParent(config),
      ...(signal ? { signal } : {}),
      upload: async ({ path, objectName: object, bytes }, uploadSignal) => {
        logger.info({ object, bytes, store: store.description }, 'uploading snapshot');
        progress = new TransferProgress({
          operation: 'upload',
          objectName: object,
          totalBytes: bytes,
          logger,
          display: deps.display,
        });
        try {
          await store.putFile(object, path, { signal: uploadSignal, onProgress: progress.update });
        } finally {
          progress.done();
        }
      },
    });
    const { manifest } = created;
    try {
      // Data is stored completely: only now may a reader find it.
      await publishManifest(store, manifest, signal);
    } finally {
      await created.dispose();
    }
    const durationMs = performance.now() - startedAt;
    metrics?.snapshotDuration.observe({ operation: 'save' }, durationMs / 1000);
    metrics?.snapshotSize.set(manifest.sizeBytes);
    metrics?.snapshotAge.set(0);
    logger.info(
      {
        name: manifest.name,
        object: manifest.dataObject,
        size_bytes: manifest.sizeBytes,
        stored_bytes: manifest.dataBytes,
        ...(manifest.encryption ? { key_id: manifest.encryption.keyId } : {}),
        duration_ms: Math.round(durationMs),
        store: store.description,
        positions: manifest.positions,
      },
      'Snapshot saved',
    );
    let pruned: string[] = [];
    try {
      pruned = await pruneSnapshots(store, config.snapshot.keep, {
        signal,
        ...(deps.orphanGraceMs !== undefined ? { orphanGraceMs: deps.orphanGraceMs } : {}),
      });
      if (pruned.length > 0) logger.info({ objects: pruned }, 'removed old snapshots');
    } catch (err) {
      logger.warn(
        { err: errorMessage(err) },
        'removing old snapshots failed; will retry after the next snapshot',
      );
    }
    return { manifest, manifestObject: manifestObjectName(manifest.name), durationMs, pruned };
  } catch (err) {
    metrics?.snapshotFailures.inc({ operation: 'save' });
    logger.error(
      { err: errorMessage(err), code: (err as { code?: unknown }).code, store: store.description },
      'Unable to save snapshot',
    );
    throw err;
  }
}
