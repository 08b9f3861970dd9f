import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

export interface CheckpointOptions {
  readonly dbPath: string;
  readonly busyTimeoutMs: number;
  /** PASSIVE never waits for readers or writers; TRUNCATE also empties the WAL file. Default TRUNCATE. */
  readonly mode?: 'PASSIVE' | 'TRUNCATE';
}

/** SQLite's answer to `wal_checkpoint`: frames in the WAL and how many are now in the database file. */
export interface CheckpointResult {
  readonly busy: boolean;
  readonly logFrames: number;
  readonly checkpointedFrames: number;
}

/** Resolved here, so the thread loads the same build whatever its working directory. */
const SQLITE_MODULE = createRequire(import.meta.url).resolve('better-sqlite3');

// A script, not a module file: it runs the same from source (tsx) and from the build.
const THREAD = `
const { parentPort, workerData: w } = require('node:worker_threads');
const Database = require(w.sqliteModule);
const db = new Database(w.dbPath, { fileMustExist: true, timeout: w.busyTimeoutMs });
try {
  const [r] = db.pragma('wal_checkpoint(' + w.mode + ')');
  parentPort.postMessage({ busy: r.busy === 1, logFrames: r.log, checkpointedFrames: r.checkpointed });
} finally {
  db.close();
}
`;

/**
 * Folds the WAL back into the database file on a fresh worker thread: copying
 * a large WAL took ~0.4 s, which on the main thread stalled publishing and
 * applying. Settles once the thread has ended.
 */
export function checkpointInWorker(options: CheckpointOptions): Promise<CheckpointResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(THREAD, {
      eval: true,
      workerData: {
        sqliteModule: SQLITE_MODULE,
        dbPath: options.dbPath,
        busyTimeoutMs: options.busyTimeoutMs,
        mode: options.mode ?? 'TRUNCATE',
      },
    });
    let result: CheckpointResult | undefined;
    let failure: unknown;
    worker.on('message', (m: CheckpointResult) => (result = m));
    worker.once('error', (err) => (failure = err));
    worker.once('exit', (code) => {
      if (result !== undefined) resolve(result);
      else reject(failure ?? new Error(`checkpoint thread exited with code ${code}`));
    });
  });
}
