import { SnapshotStoreError, type SnapshotStoreErrorCode } from '../snapshot-store.ts';
import { assertObjectName } from './object-name.ts';
import { DEFAULT_STORE_RETRY, withRetry } from './retry.ts';

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

export interface StoreOperationsOptions<S> {
  /** Strings that must never appear in a message (passwords, secret keys, tokens). */
  readonly secrets?: readonly string[];
  /** Default `DEFAULT_STORE_RETRY`. */
  readonly retry?: StoreOperation['retry'];
  /** Runs at the start of every attempt, after the closed and abort checks; its result goes to the operation. */
  readonly beginAttempt?: () => Promise<S>;
}

/**
 * The operations of one store, each run by `runStoreOperation` with the
 * store's backend name, classifier and retry policy. An object's name is
 * checked first (`ERR_SNAPSHOT_STORE_INVALID_NAME`, never retried); every
 * attempt then fails at once when the store is closed or the signal fired.
 * `S` is what each attempt starts with (SFTP: its connection).
 */
export class StoreOperations<S = void> {
  readonly #backend: string;
  readonly #classify: (err: unknown) => ErrorVerdict;
  readonly #options: StoreOperationsOptions<S>;
  #closed = false;

  constructor(
    backend: string,
    classify: (err: unknown) => ErrorVerdict,
    options: StoreOperationsOptions<S> = {},
  ) {
    this.#backend = backend;
    this.#classify = classify;
    this.#options = options;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** From now on every operation fails with "store is closed". False when the store was closed already. */
  markClosed(): boolean {
    if (this.#closed) return false;
    this.#closed = true;
    return true;
  }

  /** A store-wide operation: "open", "list". */
  run<T>(operation: string, signal: AbortSignal | undefined, fn: (session: S) => Promise<T>): Promise<T> {
    const { retry = DEFAULT_STORE_RETRY, secrets = [], beginAttempt } = this.#options;
    const op = { backend: this.#backend, operation, signal, retry, classify: this.#classify, secrets };
    return runStoreOperation(op, async () => {
      if (this.#closed) throw new Error('store is closed');
      signal?.throwIfAborted();
      return fn(beginAttempt ? await beginAttempt() : (undefined as S));
    });
  }

  /** `<verb> <name>` on one object, e.g. "put snapshot-1.db". */
  async runOnObject<T>(
    verb: 'put' | 'get' | 'delete',
    name: string,
    signal: AbortSignal | undefined,
    fn: (session: S) => Promise<T>,
  ): Promise<T> {
    const operation = `${verb} ${name}`;
    assertObjectName(this.#backend, operation, name);
    return this.run(operation, signal, fn);
  }
}

/** `ERR_SNAPSHOT_STORE_CONFIG` for unusable store options, thrown by constructors. */
export function storeConfigError(backend: string, detail: string): SnapshotStoreError {
  return new SnapshotStoreError({
    code: 'ERR_SNAPSHOT_STORE_CONFIG',
    backend,
    operation: 'configure',
    detail,
  });
}

/** `ERR_SNAPSHOT_NOT_FOUND` for `get <name>`. */
export function objectNotFound(backend: string, name: string): SnapshotStoreError {
  return new SnapshotStoreError({
    code: 'ERR_SNAPSHOT_NOT_FOUND',
    backend,
    operation: `get ${name}`,
    detail: 'no such object',
  });
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
