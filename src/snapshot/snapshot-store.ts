/**
 * Named-object storage for snapshots: the one interface every backend
 * (local directory, S3, WebDAV, SFTP, NATS object store) implements, one file
 * each under `stores/`. What a snapshot contains, manifests, retention and who
 * takes snapshots live in free functions over this interface, not in backends.
 *
 * Names are flat (no directories): 1-200 characters of `A-Z a-z 0-9 . _ -`,
 * not starting with "." (names starting with "." are reserved for a backend's
 * temporary objects, which `list()` never returns). See `stores/object-name.ts`.
 *
 * Every method rejects only with a `SnapshotStoreError`. An aborted `signal`
 * rejects with code `ERR_SNAPSHOT_STORE_ABORTED` (the signal's reason as `cause`)
 * and leaves the store as it was before the call: no partial object under the
 * name, no temporary object visible to `list()`.
 */
export interface SnapshotStore {
  /**
   * Where the objects live, for logs: e.g. "s3 bucket x at http://127.0.0.1:9000 prefix path/".
   * Never contains secrets (passwords, secret keys, tokens).
   */
  readonly description: string;

  /**
   * Connects and checks the credentials; creates the bucket or directory when
   * it is missing. Must be called before any other method. Idempotent.
   */
  open(signal?: AbortSignal): Promise<void>;

  /**
   * Uploads the local file `localPath` under `name`, replacing any object of
   * that name. Atomic: readers see the old object or the complete new one, never
   * a partial one; a crash or abort mid-put leaves the old object (if any) intact.
   * Streams from disk: memory does not grow with the file size. The file must
   * not be modified afterwards (a local store may link it). `onProgress`
   * receives the cumulative number of bytes transferred, ending at the file size.
   */
  putFile(name: string, localPath: string, options?: SnapshotTransferOptions): Promise<void>;

  /**
   * Downloads object `name` into `localPath`: written to `localPath + ".part"`,
   * then renamed over `localPath` (not flushed: a scratch file), so `localPath`
   * is either untouched or complete. The file must not be modified in place
   * (a local store may link it); removing or renaming it is fine. Rejects with code `ERR_SNAPSHOT_NOT_FOUND` when the
   * object does not exist (and then creates no file). `onProgress` as for `putFile`.
   */
  getFile(name: string, localPath: string, options?: SnapshotTransferOptions): Promise<void>;

  /** Stores a small object (manifest, pointer) held in memory, atomically, replacing any old one. */
  putBytes(name: string, data: Uint8Array, signal?: AbortSignal): Promise<void>;

  /** Reads a small object whole; `undefined` when it does not exist. */
  getBytes(name: string, signal?: AbortSignal): Promise<Uint8Array | undefined>;

  /**
   * The objects of this store (only those under its own bucket prefix or
   * directory), sorted by name. Never includes temporary or partial uploads,
   * nor anything whose name is not a valid object name.
   */
  list(signal?: AbortSignal): Promise<SnapshotObjectInfo[]>;

  /** Removes object `name`. Idempotent: an absent object is not an error. */
  delete(name: string, signal?: AbortSignal): Promise<void>;

  /** Releases connections. Idempotent; the store cannot be used afterwards. */
  close(): Promise<void>;
}

export interface SnapshotObjectInfo {
  readonly name: string;
  readonly size: number;
  readonly modified: Date;
}

export interface SnapshotTransferOptions {
  readonly signal?: AbortSignal;
  /**
   * Cumulative bytes transferred so far, ending at the object's size (0 for an
   * empty one); called often, so keep it cheap. When a transient failure makes
   * the store retry, counting starts again from 0.
   */
  readonly onProgress?: (bytes: number) => void;
}

/** Stable error codes: callers branch on these, never on messages. */
export const SNAPSHOT_STORE_ERROR_CODES = [
  /** The named object does not exist (getFile). */
  'ERR_SNAPSHOT_NOT_FOUND',
  /** Credentials rejected or permission denied. Not retried. */
  'ERR_SNAPSHOT_STORE_AUTH',
  /** Cannot connect (refused, unknown host, timeout) after the retries. */
  'ERR_SNAPSHOT_STORE_UNREACHABLE',
  /** The destination is full (disk, quota, HTTP 507). */
  'ERR_SNAPSHOT_STORE_NO_SPACE',
  /** SFTP server host key unknown or changed. Not retried. */
  'ERR_SNAPSHOT_STORE_HOST_KEY',
  /** The caller's AbortSignal fired. */
  'ERR_SNAPSHOT_STORE_ABORTED',
  /** The object name breaks the naming rules above. */
  'ERR_SNAPSHOT_STORE_INVALID_NAME',
  /** The store options are unusable (bad URL, unreadable key file). */
  'ERR_SNAPSHOT_STORE_CONFIG',
  /** Anything else (server error, protocol error, closed store). */
  'ERR_SNAPSHOT_STORE',
] as const;
export type SnapshotStoreErrorCode = (typeof SNAPSHOT_STORE_ERROR_CODES)[number];

/**
 * The only error a `SnapshotStore` throws. The message reads
 * `<backend>: <operation>: <detail>`, e.g.
 * `s3: put snapshot-123.db: access denied (check access_key/secret)`,
 * and never contains a secret; the original error is kept as `cause`.
 */
export class SnapshotStoreError extends Error {
  override readonly name = 'SnapshotStoreError';
  readonly code: SnapshotStoreErrorCode;
  /** "local", "s3", "webdav", "sftp", … */
  readonly backend: string;
  /** Short lowercase operation, e.g. "open", "put snapshot-1.db", "list". */
  readonly operation: string;

  constructor(init: {
    code: SnapshotStoreErrorCode;
    backend: string;
    operation: string;
    detail: string;
    cause?: unknown;
  }) {
    super(
      `${init.backend}: ${init.operation}: ${init.detail}`,
      init.cause === undefined ? undefined : { cause: init.cause },
    );
    this.code = init.code;
    this.backend = init.backend;
    this.operation = init.operation;
  }
}
