import Database from 'better-sqlite3';

/** The database cannot be opened as the daemon needs it; the message says why and what to do. */
export class DatabaseOpenError extends Error {
  override readonly name = 'DatabaseOpenError';
  readonly code = 'ERR_DATABASE_OPEN';
  readonly hint: string | undefined;
  /** True when the configuration is at fault (db_path names no SQLite database): the CLI exits 2. */
  readonly usage: boolean;
  constructor(message: string, options: { hint?: string; cause?: unknown; usage?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.hint = options.hint;
    this.usage = options.usage ?? false;
  }
}

/**
 * Opens a daemon connection: WAL journal (readers never block the writer; any
 * SQLite client keeps working with it), busy timeout, `synchronous = NORMAL`.
 */
export function openDatabase(
  path: string,
  options: { busyTimeoutMs: number; readonly: boolean },
): Database.Database {
  let db: Database.Database | undefined;
  try {
    db = new Database(path, {
      fileMustExist: true,
      readonly: options.readonly,
      timeout: options.busyTimeoutMs,
    });
    if (!options.readonly) {
      const mode = db.pragma('journal_mode = WAL', { simple: true }) as string;
      if (mode !== 'wal') throw new Error(`journal_mode stayed ${mode}`);
      db.pragma('synchronous = NORMAL');
    }
    db.prepare('SELECT count(*) FROM sqlite_schema').get();
    return db;
  } catch (err) {
    db?.close();
    const code = (err as { code?: string }).code ?? '';
    if (code === 'SQLITE_NOTADB') {
      throw new DatabaseOpenError(`${JSON.stringify(path)} is not an SQLite database`, {
        hint: "set db_path to the application's SQLite database file",
        cause: err,
        usage: true,
      });
    }
    if (code === 'SQLITE_READONLY' || code === 'SQLITE_CANTOPEN' || code === 'SQLITE_READONLY_DIRECTORY') {
      throw new DatabaseOpenError(`cannot open ${path} for writing: ${(err as Error).message}`, {
        hint: 'the daemon needs write access to the database file and its directory (for the -wal and -shm files)',
        cause: err,
      });
    }
    if (code === 'SQLITE_BUSY') {
      throw new DatabaseOpenError(`${path} is locked by another connection`, {
        hint: 'a long application transaction holds the lock; retry when it ends or raise busy_timeout',
        cause: err,
      });
    }
    throw new DatabaseOpenError(`cannot open ${path}: ${(err as Error).message}`, { cause: err });
  }
}
