/**
 * Entry of the snapshot worker thread: runs the one task in `workerData` and
 * posts its result or its error, then ends. Thin by design; the work is in
 * `snapshot-tasks.ts`.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { runSnapshotTaskHere, type SnapshotTask, type SnapshotTaskEvent } from './snapshot-tasks.ts';

/** An error as plain data: class name, message, and the codes callers branch on. */
export interface WorkerError {
  readonly name: string;
  readonly message: string;
  readonly code?: string;
  readonly hint?: string;
}

function toWorkerError(err: unknown): WorkerError {
  if (!(err instanceof Error)) return { name: 'Error', message: String(err) };
  const e = err as Error & { code?: unknown; hint?: unknown };
  return {
    name: e.name,
    message: e.message,
    ...(typeof e.code === 'string' ? { code: e.code } : {}),
    ...(typeof e.hint === 'string' ? { hint: e.hint } : {}),
  };
}

/** What the thread posts: events while the task runs, then exactly one outcome. */
export type WorkerMessage =
  | { readonly type: 'event'; readonly event: SnapshotTaskEvent }
  | { readonly type: 'done'; readonly result: unknown }
  | { readonly type: 'failed'; readonly error: WorkerError };

const post = (m: WorkerMessage) => parentPort?.postMessage(m);
try {
  const result = await runSnapshotTaskHere(workerData as SnapshotTask, (event) =>
    post({ type: 'event', event }),
  );
  post({ type: 'done', result });
} catch (err) {
  post({ type: 'failed', error: toWorkerError(err) });
}
