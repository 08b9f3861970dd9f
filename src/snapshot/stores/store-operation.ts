import { SnapshotStoreError, type SnapshotStoreErrorCode } from '../snapshot-store.ts';
import { withRetry } from './retry.ts';

/** How a backend judges one failure: which code to report, what to say, whether to try again. */
export interface ErrorVerdict {
  readonly code: SnapshotStoreErrorCode;
  /** Human detail after "<backend>: <operation>: "; secrets are scrubbed from it anyway. */
  readonly detail: string;
  readonly transient: boolean;
}

export interface StoreOperation {
  readonly backend: string;
  /** Short lowercase operation for the message, e.g. "put snapshot-1.db". */
  readonly operation: string;
  readonly signal?: AbortSignal | undefined;
  readonly retry: { readonly attempts: number; readonly baseDelayMs: number };
  /** Maps a raw error (SDK, socket, HTTP status) to a verdict. */
  readonly classify: (err: unknown) => ErrorVerdict;
  /** Strings that must never appear in a message (passwords, secret keys, tokens). */
  readonly secrets: readonly string[];
}

/**
 * Runs one store operation with the retry policy and turns whatever it throws
 * into a `SnapshotStoreError`: `ERR_SNAPSHOT_STORE_ABORTED` when the caller's
 * signal fired, a `SnapshotStoreError` thrown by `fn` as is (never retried),
 * anything else through `classify`, retried while transient.
 */
export async function runStoreOperation<T>(
  op: StoreOperation,
  fn: (attempt: number) => Promise<T>,
): Promise<T> {
  try {
    return await withRetry(fn, {
      ...op.retry,
      signal: op.signal,
      isTransient: (err) => !(err instanceof SnapshotStoreError) && op.classify(err).transient,
    });
  } catch (err) {
    throw toStoreError(op, err);
  }
}

/** The `SnapshotStoreError` that `runStoreOperation` would throw for `err`. */
export function toStoreError(op: StoreOperation, err: unknown): SnapshotStoreError {
  const { backend, operation } = op;
  if (op.signal?.aborted) {
    return new SnapshotStoreError({
      code: 'ERR_SNAPSHOT_STORE_ABORTED',
      backend,
      operation,
      detail: 'aborted',
      cause: op.signal.reason,
    });
  }
  if (err instanceof SnapshotStoreError) return err;
  const verdict = op.classify(err);
  return new SnapshotStoreError({
    code: verdict.code,
    backend,
    operation,
    detail: redactSecrets(verdict.detail, op.secrets),
    cause: err,
  });
}

/**
 * Replaces every secret (raw and URL-encoded) in `text` by "***". A second line
 * of defence: details are built from server and library messages, which should
 * not echo credentials but are not ours to trust.
 */
export function redactSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) {
    if (secret.length < 3) continue; // scrubbing "a" would mangle the message and hide nothing
    for (const form of new Set([secret, encodeURIComponent(secret)])) out = out.split(form).join('***');
  }
  return out;
}
