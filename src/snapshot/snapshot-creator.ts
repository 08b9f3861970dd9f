import { availableParallelism } from 'node:os';
import { errorMessage } from '../error-message.ts';
import { SnapshotError } from './snapshot-error.ts';
import { estimateCopyBytes } from './snapshot-copy.ts';
import type { SnapshotKey } from './snapshot-key.ts';
import {
  dataObjectName,
  encryptionContext,
  MANIFEST_FORMAT,
  SNAPSHOT_CIPHER,
  snapshotBaseName,
  type SnapshotManifest,
} from './snapshot-manifest.ts';
import { assertFreeSpace, diskError, SnapshotTempDir } from './snapshot-temp-dir.ts';
import { runSnapshotTask } from './snapshot-worker.ts';

export interface CreateSnapshotOptions {
  readonly dbPath: string;
  readonly busyTimeoutMs: number;
  readonly nodeId: number;
  readonly streamPrefix: string;
  readonly shards: number;
  /** zstd-compress the data object. */
  readonly compress: boolean;
  /** Default 1: measured faster than 3 on this machine's 2 cores (bench/snapshot.ts), where compression is on the critical path. */
  readonly compressionLevel?: number;
  /** zstd compression threads (see `EncodeOptions.compressionWorkers`). Default: one per core, at most 4. */
  readonly compressionWorkers?: number;
  /** Encrypt the data object (after compression) with this key; undefined = not encrypted. */
  readonly encryptionKey?: SnapshotKey | undefined;
  /** Directory that receives the private temporary directory. */
  readonly tempParent: string;
  readonly signal?: AbortSignal;
  /**
   * Uploads the data object, given the final file, its size and a signal that
   * fires when the snapshot fails elsewhere. Without compression and encryption it starts as
   * soon as the copy is final and overlaps the checksum pass; the returned
   * manifest (which needs the checksum) is then ready when both are done.
   */
  readonly upload?: (data: SnapshotData, signal: AbortSignal) => Promise<void>;
}

/** The data object's file, as handed to `upload`. */
export interface SnapshotData {
  readonly path: string;
  /** The object name it must be stored under (the manifest's `dataObject`). */
  readonly objectName: string;
  readonly bytes: number;
}

/** A snapshot file ready to upload, with its manifest. `dispose()` removes the temporary files. */
export interface CreatedSnapshot {
  readonly manifest: SnapshotManifest;
  /** The file to upload as `manifest.dataObject`. */
  readonly uploadPath: string;
  dispose(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Makes a snapshot file of the database (the seed's steps: `VACUUM INTO` a
 * temporary file, remove our triggers and logs, compact; then checksum and
 * optional zstd, then optional encryption), off the main thread. Needs about
 * the database's size free in `tempParent` (twice that with compression or
 * encryption); a full disk rejects with
 * `ERR_SNAPSHOT_NO_SPACE`. The temporary files are removed when this rejects,
 * and by `dispose()` otherwise.
 */
export async function createSnapshotFile(options: CreateSnapshotOptions): Promise<CreatedSnapshot> {
  const createdAt = Date.now();
  const baseName = snapshotBaseName(createdAt, options.nodeId);
  let estimate: number;
  try {
    estimate = estimateCopyBytes(options.dbPath, options.busyTimeoutMs);
  } catch (err) {
    throw new SnapshotError('ERR_SNAPSHOT_CREATE', `cannot read ${options.dbPath}: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  const key = options.encryptionKey;
  const encoded = options.compress || key !== undefined;
  const needBytes = encoded ? 2 * estimate : estimate;
  await assertFreeSpace(options.tempParent, needBytes);
  const dir = await SnapshotTempDir.create(options.tempParent);
  const dataObject = dataObjectName(baseName, options.compress, key !== undefined);
  const context = encryptionContext({
    name: baseName,
    streamPrefix: options.streamPrefix,
    shards: options.shards,
  });
  // Fires when the caller aborts, or when the copy or the upload fails: stops the other one.
  const inner = new AbortController();
  const onAbort = () => inner.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', onAbort, { once: true });
  let uploading: Promise<void> | undefined;
  const startUpload = (path: string, bytes: number) => {
    if (options.upload === undefined || uploading !== undefined) return;
    uploading = options.upload({ path, objectName: dataObject, bytes }, inner.signal);
    uploading.catch((err: unknown) => inner.abort(err));
  };
  try {
    const created = await runSnapshotTask(
      {
        kind: 'create',
        dbPath: options.dbPath,
        copyPath: dir.file(`${baseName}.db`),
        busyTimeoutMs: options.busyTimeoutMs,
        ...(encoded
          ? {
              encode: {
                path: dir.file(dataObject),
                compress: options.compress,
                ...(key === undefined ? {} : { encryption: { key: key.bytes, context } }),
              },
            }
          : {}),
        compressionLevel: options.compressionLevel ?? 1,
        compressionWorkers: options.compressionWorkers ?? Math.min(4, availableParallelism()),
      },
      {
        signal: inner.signal,
        onEvent: (event) => {
          if (event.type === 'data-ready') startUpload(event.path, event.bytes);
        },
      },
    );
    startUpload(created.uploadPath, created.uploadBytes);
    await uploading;
    const manifest: SnapshotManifest = {
      format: MANIFEST_FORMAT,
      name: baseName,
      nodeId: options.nodeId,
      createdAt,
      streamPrefix: options.streamPrefix,
      shards: options.shards,
      positions: created.facts.positions,
      originSeqs: created.facts.originSeqs,
      schemaSql: key === undefined ? created.facts.schemaSql : '',
      sizeBytes: created.digest.sizeBytes,
      checksum: created.digest.checksum,
      compressed: options.compress,
      dataObject,
      dataBytes: created.uploadBytes,
      ...(key === undefined ? {} : { encryption: { cipher: SNAPSHOT_CIPHER, keyId: key.id } }),
    };
    const dispose = () => dir.remove();
    return { manifest, uploadPath: created.uploadPath, dispose, [Symbol.asyncDispose]: dispose };
  } catch (err) {
    inner.abort(err);
    // The upload's own failure is the real cause when it stopped the copy.
    const uploadError = await uploading?.then(
      () => undefined,
      (e: unknown) => e,
    );
    await dir.remove();
    if (uploadError !== undefined && !options.signal?.aborted) throw uploadError;
    if (options.signal?.aborted) throw err;
    const mapped = diskError(err, options.tempParent, needBytes);
    if (mapped instanceof SnapshotError) throw mapped;
    throw new SnapshotError('ERR_SNAPSHOT_CREATE', `cannot copy ${options.dbPath}: ${errorMessage(err)}`, {
      cause: err,
    });
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
  }
}
