import Database from 'better-sqlite3';
import { SnapshotError } from './snapshot-error.ts';

export interface SwapOptions {
  /** The verified, prepared snapshot file (rollback-journal mode, the live page size). */
  readonly sourcePath: string;
  /** The live database. */
  readonly livePath: string;
  /**
   * Runs while the swap holds the live database's write lock and before any
   * page is written; throwing abandons the swap and leaves the live database
   * exactly as it was. Reads through another connection see the last committed
   * state, which no one can change until the swap ends.
   */
  readonly checkLocked: () => void;
  /** How long to wait for another connection's write transaction to end. */
  readonly busyTimeoutMs: number;
  /** Bytes copied so far. */
  readonly onProgress?: ((bytes: number) => void) | undefined;
  /** Pages per backup step (the event loop runs between steps). Default 4096 (16 MiB at 4 KiB pages). */
  readonly pagesPerStep?: number;
}

const BUSY_RETRY_MS = 25;

/**
 * Replaces the live database's content with the source file through SQLite's
 * online backup API, as one write transaction on the live database: it takes
 * the write lock before the first page, writes through the live journal (the
 * WAL, keeping WAL mode), and commits at the end, so every other connection,
 * including ones opened before, sees the old content or the new one, never a
 * mix; a failure rolls back to the old content. SQLite bumps the schema cookie,
 * so every connection re-reads the schema.
 */
export async function swapDatabase(options: SwapOptions): Promise<{ readonly bytes: number }> {
  const src = new Database(options.sourcePath, { readonly: true, fileMustExist: true });
  try {
    const pageSize = src.pragma('page_size', { simple: true }) as number;
    const step = options.pagesPerStep ?? 4096;
    const deadline = performance.now() + options.busyTimeoutMs;
    for (;;) {
      let checked = false;
      const result = await src.backup(options.livePath, {
        progress: ({ totalPages, remainingPages }) => {
          // Called after each step; the first step copied nothing and took the locks.
          if (!checked) {
            checked = true;
            options.checkLocked();
          }
          options.onProgress?.((totalPages - remainingPages) * pageSize);
          return step;
        },
      });
      // better-sqlite3 reports a destination that was busy on the first step as a finished backup of 0 pages.
      if (result.totalPages > 0) {
        if (!checked) throw new Error('backup finished without taking the lock first');
        options.onProgress?.(result.totalPages * pageSize);
        return { bytes: result.totalPages * pageSize };
      }
      if (performance.now() > deadline) {
        throw new SnapshotError(
          'ERR_SNAPSHOT_RESTORE',
          `cannot restore into ${options.livePath}: another connection kept it locked for ${options.busyTimeoutMs} ms`,
          { hint: 'end long write transactions of applications during the restore, or raise busy_timeout' },
        );
      }
      await new Promise((r) => setTimeout(r, BUSY_RETRY_MS));
    }
  } finally {
    src.close();
  }
}
