import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Database, Statement } from 'better-sqlite3';

export interface ChangeDetectorOptions {
  /** The database file; its `-wal` (and the file itself) are watched. */
  readonly dbPath: string;
  /** A read connection of the daemon's: `PRAGMA data_version` changes when another connection commits. */
  readonly db: Database;
  /** Safety-net poll of data_version, ms. */
  readonly safetyPollMs: number;
  /** HarmonyLite's `polling_interval`: wake up this often regardless (0 = off), ms. */
  readonly pollingIntervalMs: number;
}

/**
 * Tells when the database may have new changes: a watch on the `-wal` file
 * wakes listeners at once; `PRAGMA data_version` polling is the safety net for
 * file systems where watching fails; `polling_interval` wakes them regardless.
 * Also reports schema changes (`PRAGMA schema_version`).
 */
export class ChangeDetector {
  readonly #options: ChangeDetectorOptions;
  #watcher: FSWatcher | undefined;
  #timers: NodeJS.Timeout[] = [];
  readonly #listeners = new Set<() => void>();
  #dataVersion = -1;
  #schemaVersion = -1;
  /** Prepared once (`db.pragma()` prepares per call; the schema check runs on every scan). */
  readonly #dataVersionStmt: Statement;
  readonly #schemaVersionStmt: Statement;

  constructor(options: ChangeDetectorOptions) {
    this.#options = options;
    this.#dataVersionStmt = options.db.prepare('PRAGMA data_version').pluck();
    this.#schemaVersionStmt = options.db.prepare('PRAGMA schema_version').pluck();
  }

  open(): void {
    const { dbPath, safetyPollMs, pollingIntervalMs } = this.#options;
    const name = basename(dbPath);
    try {
      this.#watcher = watch(dirname(dbPath), { persistent: false }, (_event, file) => {
        if (file === `${name}-wal` || file === name) this.notify();
      });
      this.#watcher.on('error', () => undefined);
    } catch {
      // Watching is an accelerator; polling below keeps working without it.
    }
    this.#timers.push(setInterval(() => this.#poll(), safetyPollMs).unref());
    if (pollingIntervalMs > 0) this.#timers.push(setInterval(() => this.notify(), pollingIntervalMs).unref());
  }

  close(): void {
    this.#watcher?.close();
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    this.notify();
  }

  #poll(): void {
    try {
      const v = this.#dataVersionStmt.get() as number;
      if (v !== this.#dataVersion) {
        this.#dataVersion = v;
        this.notify();
      }
    } catch {
      // The database may be briefly unavailable (restore swap); the next poll retries.
    }
  }

  /** Calls every listener; also called by the daemon after its own writes. */
  notify(): void {
    for (const l of this.#listeners) l();
  }

  /** Registers a listener called on every possible change; returns its remover. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** True once per schema change (including the first call). */
  schemaChanged(): boolean {
    const v = this.#schemaVersionStmt.get() as number;
    if (v === this.#schemaVersion) return false;
    this.#schemaVersion = v;
    return true;
  }
}
