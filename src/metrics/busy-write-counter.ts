import type { WriterQueue } from '../replication/writer-queue.ts';
import type { Metrics } from './metrics.ts';

/**
 * True for SQLite's "database is locked" (SQLITE_BUSY and its extended codes),
 * also when the error crossed a worker boundary and kept only its message.
 * Pure.
 */
export function isSqliteBusy(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.startsWith('SQLITE_BUSY')) return true;
  return /\bdatabase is locked\b/i.test(String((err as Error | null)?.message ?? err));
}

/**
 * Counts the write jobs of `writer` that fail with SQLITE_BUSY (they waited the
 * whole busy timeout for the write lock; every caller retries them) into
 * `sqlite_busy_total`. The time jobs wait for their turn in the queue is
 * `writer_queue_wait_seconds`, recorded through `WriterQueue.onWait`.
 * Wraps `writer.run` in place; the returned function undoes it.
 */
export function countBusyWrites(writer: WriterQueue, metrics: Metrics): () => void {
  const original = writer.run;
  // Every argument after the job (the lane) passes through unchanged.
  writer.run = function run<T>(
    this: WriterQueue,
    job: () => T | Promise<T>,
    ...rest: Parameters<WriterQueue['run']> extends [unknown, ...infer R] ? R : never
  ): Promise<T> {
    const counted = async () => {
      try {
        return await job();
      } catch (err) {
        if (isSqliteBusy(err)) metrics.sqliteBusy.inc();
        throw err;
      }
    };
    return original.call(this, counted, ...rest) as Promise<T>;
  };
  return () => {
    writer.run = original;
  };
}
