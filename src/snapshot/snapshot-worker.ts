import { Worker } from 'node:worker_threads';
import { SnapshotError, SNAPSHOT_ERROR_CODES, type SnapshotErrorCode } from './snapshot-error.ts';
import type { SnapshotTask, SnapshotTaskEvent, SnapshotTaskResult } from './snapshot-tasks.ts';
import type { WorkerError, WorkerMessage } from './snapshot-worker-thread.ts';

const here = import.meta.url;
/** The compiled worker, or under tsx (tests, development) a bootstrap that registers tsx in the worker first. */
const WORKER_FILE = new URL(
  here.endsWith('.ts') ? './snapshot-worker-thread.tsx-bootstrap.mjs' : './snapshot-worker-thread.js',
  here,
);

export interface RunSnapshotTaskOptions {
  readonly signal?: AbortSignal | undefined;
  /** Events the task reports while it runs (see `SnapshotTaskEvent`). */
  readonly onEvent?: ((event: SnapshotTaskEvent) => void) | undefined;
}

/**
 * Runs one snapshot task (`snapshot-tasks.ts`) on a fresh worker thread, so
 * `VACUUM INTO`, hashing, compression and `quick_check` of a large
 * database never block the main thread. A worker per task: snapshots are
 * rare, and a finished worker leaves nothing behind.
 *
 * Settles only once the thread has ended, so the task's files are closed and
 * the caller may remove them at once. Aborting terminates the worker (after
 * the SQLite call in progress returns) and rejects with `ERR_SNAPSHOT_ABORTED`.
 */
export function runSnapshotTask<T extends SnapshotTask>(
  task: T,
  options: RunSnapshotTaskOptions = {},
): Promise<SnapshotTaskResult<T>> {
  const { signal, onEvent } = options;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(aborted(signal));
    const worker = new Worker(WORKER_FILE, { workerData: task });
    let outcome: Exclude<WorkerMessage, { type: 'event' }> | undefined;
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      fn();
    };
    const onAbort = () => {
      void worker.terminate().finally(() => settle(() => reject(aborted(signal!))));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    worker.on('message', (m: WorkerMessage) => {
      if (m.type === 'event') {
        onEvent?.(m.event);
        return;
      }
      outcome = m;
      void worker.terminate(); // ends it even if a handle would keep it alive; settled on 'exit'
    });
    worker.once('error', (err) => settle(() => reject(err)));
    worker.once('exit', (code) =>
      settle(() => {
        if (outcome === undefined)
          reject(new Error(`snapshot worker exited with code ${code} before finishing`));
        else if (outcome.type === 'done') resolve(outcome.result as SnapshotTaskResult<T>);
        else reject(fromWorkerError(outcome.error));
      }),
    );
  });
}

function aborted(signal: AbortSignal): SnapshotError {
  return new SnapshotError('ERR_SNAPSHOT_ABORTED', 'snapshot operation aborted', { cause: signal.reason });
}

function fromWorkerError(e: WorkerError): Error {
  if (e.name === 'SnapshotError' && (SNAPSHOT_ERROR_CODES as readonly string[]).includes(e.code ?? '')) {
    return new SnapshotError(
      e.code as SnapshotErrorCode,
      e.message,
      e.hint === undefined ? {} : { hint: e.hint },
    );
  }
  const err = new Error(e.message) as Error & { code?: string };
  err.name = e.name;
  if (e.code !== undefined) err.code = e.code;
  return err;
}
