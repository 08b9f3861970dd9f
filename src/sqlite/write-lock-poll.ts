import type { Database } from 'better-sqlite3';
import { isSqliteBusy } from './sqlite-busy.ts';
import { busyTimeout, setBusyTimeout } from './busy-timeout.ts';

/** Polling every turn of the event loop catches the short gaps between an application's transactions. */
const EAGER_POLL_MS = 5;

const nextTurn = () => new Promise<void>((r) => setImmediate(r));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Runs a write `job` on `db` (one statement or one IMMEDIATE transaction, so a
 * failed attempt changed nothing) as soon as SQLite's write lock is free,
 * without blocking the event loop while an application holds it. SQLite's own
 * busy handler sleeps the thread for growing intervals (up to 100 ms), which
 * freezes the main thread and, against an application that commits back to
 * back, almost never finds the lock free: replication stalls until the
 * application pauses. Here the lock is tried with a zero busy timeout every
 * turn of the event loop for the first milliseconds, then every millisecond,
 * until `timeoutMs` have passed; then the SQLITE_BUSY error is thrown.
 */
export async function whenWriteLockFree<T>(db: Database, timeoutMs: number, job: () => T): Promise<T> {
  const start = performance.now();
  const previous = busyTimeout(db);
  setBusyTimeout(db, 0);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        return attempt === 0 ? job() : withoutStackTraces(job);
      } catch (err) {
        const waited = performance.now() - start;
        if (!isSqliteBusy(err) || waited >= timeoutMs) throw err;
        await (waited < EAGER_POLL_MS ? nextTurn() : sleep(1));
      }
    }
  } finally {
    setBusyTimeout(db, previous);
  }
}

/**
 * Runs `fn` with V8's stack capture off: a retry that finds the lock taken throws
 * an SQLITE_BUSY error, and capturing its stack made each failed attempt ~3x as
 * dear (15 against 5 µs, measured; a writer node polled ~5,000 times during a
 * 200k-row burst). An error of another kind gets its stack here, where it is
 * rethrown.
 */
function withoutStackTraces<T>(fn: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return fn();
  } catch (err) {
    Error.stackTraceLimit = limit;
    if (err instanceof Error && !isSqliteBusy(err)) Error.captureStackTrace(err);
    throw err;
  } finally {
    Error.stackTraceLimit = limit;
  }
}
