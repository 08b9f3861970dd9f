import { isSqliteBusy } from '../sqlite/sqlite-busy.ts';
import type { Metrics } from './metrics.ts';

/**
 * A `WriterQueue.onError` hook counting the write jobs that fail with
 * SQLITE_BUSY into `sqlite_busy_total`: they waited the whole busy timeout for
 * the write lock (every caller retries them). The time jobs wait for their turn
 * in the queue is `writer_queue_wait_seconds`, through `WriterQueue.onWait`.
 */
export function countBusyWrites(metrics: Metrics): (err: unknown) => void {
  return (err) => {
    if (isSqliteBusy(err)) metrics.sqliteBusy.inc();
  };
}
