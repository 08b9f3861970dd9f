/** Stable codes of snapshot save and restore failures: callers branch on these, never on messages. */
export const SNAPSHOT_ERROR_CODES = [
  /** The temporary directory is too small for the snapshot copy (ENOSPC, SQLITE_FULL, quota). */
  'ERR_SNAPSHOT_NO_SPACE',
  /** Copying or cleaning the database for a snapshot failed. */
  'ERR_SNAPSHOT_CREATE',
  /** A manifest is not valid JSON or breaks the manifest format. */
  'ERR_SNAPSHOT_MANIFEST',
  /** A downloaded snapshot fails its checksum, size, decryption (authentication) or `PRAGMA quick_check`. */
  'ERR_SNAPSHOT_CORRUPT',
  /**
   * A snapshot's encryption does not match `[snapshot] encryption_key_file`:
   * encrypted with another key, encrypted while no key is configured, or not
   * encrypted while a key is.
   */
  'ERR_SNAPSHOT_KEY',
  /** Streams discarded messages this node needs and no stored snapshot reaches their first kept message. */
  'ERR_SNAPSHOT_TOO_OLD',
  /** Streams discarded messages this node needs and the store holds no snapshot at all. */
  'ERR_SNAPSHOT_MISSING',
  /** This node's own changes could not be published before a restore, which would discard them. */
  'ERR_SNAPSHOT_PENDING_CHANGES',
  /** Swapping the verified snapshot into the live database failed; the database is unchanged. */
  'ERR_SNAPSHOT_RESTORE',
  /** The caller's AbortSignal fired. */
  'ERR_SNAPSHOT_ABORTED',
] as const;
export type SnapshotErrorCode = (typeof SNAPSHOT_ERROR_CODES)[number];

/**
 * A snapshot save or restore failure. The message says what failed and why in
 * the operator's terms; `hint` (printed by the CLI as "Try: …") says what to do.
 * Store failures keep their `SnapshotStoreError` as `cause`.
 */
export class SnapshotError extends Error {
  override readonly name = 'SnapshotError';
  readonly code: SnapshotErrorCode;
  readonly hint: string | undefined;

  constructor(code: SnapshotErrorCode, message: string, options: { cause?: unknown; hint?: string } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.hint = options.hint;
  }
}
