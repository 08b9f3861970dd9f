/**
 * The heavy steps of snapshot save and restore: whole-file SQLite work and
 * streaming passes over the file. They run in the snapshot worker
 * (`snapshot-worker.ts`) so the main thread keeps publishing, applying and
 * renewing the leader lease meanwhile; tests may call them directly.
 * Every task takes and returns structured-clonable data only.
 */
import { copyFile, rename, rm, stat } from 'node:fs/promises';
import Database from 'better-sqlite3';
import { SnapshotError } from './snapshot-error.ts';
import type { SnapshotCipherParams } from './snapshot-cipher.ts';
import { readSnapshotFacts, writeSnapshotCopy, type SnapshotCopyFacts } from './snapshot-copy.ts';
import {
  checksumAlgorithm,
  decodeFile,
  digestFile,
  encodeFile,
  type FileDigest,
} from './snapshot-file-codec.ts';
import type { OriginSeq } from './snapshot-manifest.ts';
import { prepareRestoreFile, type PrepareRestoreOptions } from './prepare-restore-file.ts';
import { errorMessage } from '../error-message.ts';

export interface CreateTask {
  readonly kind: 'create';
  readonly dbPath: string;
  /** Where the copy goes; must not exist. */
  readonly copyPath: string;
  readonly busyTimeoutMs: number;
  /**
   * When set, the copy is encoded into `encode.path` in one pass (zstd when
   * `compress`, then encryption when `encryption` is set) and removed.
   */
  readonly encode?: {
    readonly path: string;
    readonly compress: boolean;
    readonly encryption?: SnapshotCipherParams;
  };
  readonly compressionLevel: number;
  /** zstd threads; default 0. */
  readonly compressionWorkers?: number;
}

export interface CreateResult {
  readonly facts: SnapshotCopyFacts;
  /** Of the plain copy. */
  readonly digest: FileDigest;
  /** The file to upload and its size. */
  readonly uploadPath: string;
  readonly uploadBytes: number;
}

/**
 * Emitted by a create task without encoding as soon as the copy is final,
 * before its checksum is computed: the upload may start at once and overlap
 * the checksum pass (the manifest, which needs the checksum, goes last anyway).
 */
export interface DataReadyEvent {
  readonly type: 'data-ready';
  readonly path: string;
  readonly bytes: number;
}

export type SnapshotTaskEvent = DataReadyEvent;

export interface VerifyTask {
  readonly kind: 'verify';
  /** The downloaded data object; consumed (removed or renamed). */
  readonly downloadedPath: string;
  /** Where the verified database file ends up. */
  readonly outPath: string;
  readonly compressed: boolean;
  /** Set when the data is encrypted (the manifest's `encryption`): the configured key and the manifest's context. */
  readonly encryption?: SnapshotCipherParams;
  readonly expected: FileDigest;
  /**
   * When set, the file's stream positions and origin sequences must equal these (the
   * manifest's). For encrypted snapshots, whose data is authenticated but whose manifest is
   * not, this authenticates what the restore plan relied on.
   */
  readonly expectedFacts?: {
    readonly positions: Readonly<Record<string, number>>;
    readonly originSeqs: readonly OriginSeq[];
  };
  readonly objectName: string;
  /** When set, the verified file is also prepared for the swap (saves a worker start). */
  readonly prepare?: Omit<PrepareRestoreOptions, 'path'>;
}

export interface VerifyResult {
  readonly digest: FileDigest;
}

export interface PrepareTask extends PrepareRestoreOptions {
  readonly kind: 'prepare';
}

export type SnapshotTask = CreateTask | VerifyTask | PrepareTask;
export type SnapshotTaskResult<T extends SnapshotTask> = T extends CreateTask
  ? CreateResult
  : T extends VerifyTask
    ? VerifyResult
    : void;

export async function runCreateTask(
  task: CreateTask,
  emit: (event: SnapshotTaskEvent) => void = () => undefined,
): Promise<CreateResult> {
  const facts = writeSnapshotCopy({
    dbPath: task.dbPath,
    outPath: task.copyPath,
    busyTimeoutMs: task.busyTimeoutMs,
  });
  const { encode } = task;
  if (encode === undefined) {
    const { size } = await stat(task.copyPath);
    emit({ type: 'data-ready', path: task.copyPath, bytes: size });
    const digest = await digestFile(task.copyPath);
    return { facts, digest, uploadPath: task.copyPath, uploadBytes: digest.sizeBytes };
  }
  const { encodedBytes, ...digest } = await encodeFile(task.copyPath, encode.path, {
    compressionLevel: encode.compress ? task.compressionLevel : undefined,
    compressionWorkers: task.compressionWorkers,
    encryption: encode.encryption,
  });
  await rm(task.copyPath, { force: true });
  return { facts, digest, uploadPath: encode.path, uploadBytes: encodedBytes };
}

/**
 * Decrypts and decompresses (when needed) and checks a downloaded snapshot:
 * every chunk's authentication tag when encrypted, size and checksum (of the
 * plain database) against the manifest, then `PRAGMA quick_check`, then
 * the positions when asked; then prepares it when asked. Rejects with
 * `ERR_SNAPSHOT_CORRUPT` on any mismatch, `ERR_SNAPSHOT_KEY` when the data
 * was encrypted with another key; `outPath` is then removed.
 */
export async function runVerifyTask(task: VerifyTask): Promise<VerifyResult> {
  const corrupt = (detail: string, cause?: unknown) =>
    new SnapshotError('ERR_SNAPSHOT_CORRUPT', `snapshot ${task.objectName} is damaged: ${detail}`, {
      ...(cause === undefined ? {} : { cause }),
      hint: 'the download is retried; if the stored object itself is damaged, take a new snapshot (harmonylite -save-snapshot) on a node that is up to date',
    });
  try {
    let digest: FileDigest;
    if (task.compressed || task.encryption !== undefined) {
      try {
        digest = await decodeFile(task.downloadedPath, task.outPath, {
          compressed: task.compressed,
          algorithm: checksumAlgorithm(task.expected.checksum),
          encryption: task.encryption,
        });
      } catch (err) {
        // Errors of the decryption are SnapshotErrors; anything else comes from zstd.
        if (err instanceof SnapshotError && err.code === 'ERR_SNAPSHOT_KEY') {
          throw new SnapshotError('ERR_SNAPSHOT_KEY', `snapshot ${task.objectName} ${err.message}`, {
            cause: err,
            hint: 'set [snapshot] encryption_key_file to the key this snapshot was encrypted with',
          });
        }
        if (err instanceof SnapshotError) throw corrupt(`cannot decrypt: ${err.message}`, err);
        throw corrupt(`cannot decompress (${errorMessage(err)})`, err);
      } finally {
        await rm(task.downloadedPath, { force: true });
      }
    } else {
      // A download may share its inode with the stored object (a local store links it): copy, then modify.
      if ((await stat(task.downloadedPath)).nlink > 1) {
        await copyFile(task.downloadedPath, task.outPath);
        await rm(task.downloadedPath, { force: true });
      } else await rename(task.downloadedPath, task.outPath);
      digest = await digestFile(task.outPath, checksumAlgorithm(task.expected.checksum));
    }
    if (digest.sizeBytes !== task.expected.sizeBytes)
      throw corrupt(`size ${digest.sizeBytes} bytes, the manifest says ${task.expected.sizeBytes}`);
    if (digest.checksum !== task.expected.checksum)
      throw corrupt(`checksum ${digest.checksum}, the manifest says ${task.expected.checksum}`);
    checkIntegrity(task.outPath, corrupt);
    if (task.expectedFacts !== undefined) checkFacts(task.outPath, task.expectedFacts, corrupt);
    if (task.prepare !== undefined) prepareRestoreFile({ ...task.prepare, path: task.outPath });
    return { digest };
  } catch (err) {
    await rm(task.outPath, { force: true });
    throw err;
  }
}

/**
 * `quick_check`, not `integrity_check`: the checksum over the whole stream
 * already proves the file is, byte for byte, the one the saver checksummed
 * (catching every damaged or truncated transfer); what is left is a file
 * damaged before it was checksummed, whose b-tree structure and page
 * accounting `quick_check` verifies. `integrity_check` adds only the
 * index-against-table comparison, which costs more the more indexes the
 * database has (bench/snapshot.ts measures both).
 */
function checkIntegrity(path: string, corrupt: (detail: string, cause?: unknown) => SnapshotError): void {
  let db: Database.Database | undefined;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
    const rows = db.prepare('PRAGMA quick_check(20)').pluck().all() as string[];
    if (rows.length !== 1 || rows[0] !== 'ok')
      throw corrupt(`PRAGMA quick_check: ${rows.slice(0, 5).join('; ')}`);
  } catch (err) {
    if (err instanceof SnapshotError) throw err;
    throw corrupt(`not a readable SQLite database (${errorMessage(err)})`, err);
  } finally {
    db?.close();
  }
}

/** Positions and origin sequences of the file must be the manifest's, key for key. */
function checkFacts(
  path: string,
  expected: NonNullable<VerifyTask['expectedFacts']>,
  corrupt: (detail: string, cause?: unknown) => SnapshotError,
): void {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  let facts: SnapshotCopyFacts;
  try {
    facts = readSnapshotFacts(db);
  } finally {
    db.close();
  }
  const canonical = (f: NonNullable<VerifyTask['expectedFacts']>) =>
    JSON.stringify({
      positions: Object.entries(f.positions).sort(([a], [b]) => Number(a) - Number(b)),
      originSeqs: [...f.originSeqs]
        .map((o) => [o.origin, o.shard, o.seq])
        .sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]!),
    });
  const found = canonical(facts);
  if (found !== canonical(expected)) {
    const shown = found.length > 300 ? `${found.slice(0, 297)}...` : found;
    throw corrupt(
      `its stream positions differ from its manifest's (the manifest was changed): the data holds ${shown}`,
    );
  }
}

export function runPrepareTask(task: PrepareTask): void {
  prepareRestoreFile(task);
}

export async function runSnapshotTaskHere<T extends SnapshotTask>(
  task: T,
  emit?: (event: SnapshotTaskEvent) => void,
): Promise<SnapshotTaskResult<T>> {
  switch (task.kind) {
    case 'create':
      return (await runCreateTask(task, emit)) as SnapshotTaskResult<T>;
    case 'verify':
      return (await runVerifyTask(task)) as SnapshotTaskResult<T>;
    case 'prepare':
      runPrepareTask(task);
      return undefined as SnapshotTaskResult<T>;
  }
  throw new Error(`unknown snapshot task ${(task as { kind: string }).kind}`);
}
