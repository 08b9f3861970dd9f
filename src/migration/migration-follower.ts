/**
 * Follows the migration stream on one node: applies every migration in stream
 * order, each through the writer queue in one transaction (migration-runner.ts).
 * `open()` applies what the node missed before it returns, so the node starts
 * its shard consumers on the newest schema it can reach. A migration that fails
 * holds the stream here, loudly (an error log naming node, statement and
 * error, a metric, health degraded), and is retried every `retryMs`: after a
 * fix by hand on this node it applies; `-migrate-resolved SEQ` passes it over.
 */
import type { JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { Database } from 'better-sqlite3';
import type { CaptureState, InstallOptions } from '../cdc/capture-installer.ts';
import type { TableFilter } from '../cdc/table-filter.ts';
import { Wakeup } from '../changelog/wakeup.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { migrationSubject } from '../nats/naming.ts';
import type { WriterQueue } from '../sqlite/writer-queue.ts';
import { appliedHash, migrationPosition, migrationRecord, recordMigration } from './migration-store.ts';
import { MigrationError, runMigration, type MigrationResult } from './migration-runner.ts';
import { migrationStreamState, readMigration } from './migration-stream.ts';

export interface MigrationFollowerDeps {
  readonly nc: NatsConnection;
  readonly jsm: JetStreamManager;
  readonly db: Database;
  readonly writer: WriterQueue;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly filter: TableFilter;
  /** Capture's options as the node installs it (read at each migration). */
  readonly install: () => InstallOptions;
  /** After a migration committed: the node refreshes what depends on the schema. */
  readonly onApplied: (capture: CaptureState) => void;
}

export interface MigrationFollowerOptions {
  readonly nodeId: number;
  readonly streamPrefix: string;
  readonly subjectPrefix: string;
  /** How often a held migration is tried again, and the stream polled besides the wake-ups, ms. */
  readonly retryMs: number;
}

/** The migration holding this node's migration stream. */
export interface HeldMigration {
  readonly seq: number;
  readonly name: string;
  readonly statement: string | undefined;
  readonly error: string;
  readonly since: number;
}

/** A held migration is logged as an error when it fails anew, then as a warning this often. */
const HELD_REMINDER_MS = 60_000;

export class MigrationFollower {
  readonly #deps: MigrationFollowerDeps;
  readonly options: MigrationFollowerOptions;
  readonly #abort = new AbortController();
  readonly #wake = new Wakeup();
  #sub: Subscription | undefined;
  #loop: Promise<void> | undefined;
  #held: HeldMigration | undefined;
  #heldLoggedAt = 0;
  /** Highest stream sequence this node applied or passed over. */
  position = 0;

  constructor(deps: MigrationFollowerDeps, options: MigrationFollowerOptions) {
    this.#deps = deps;
    this.options = options;
  }

  get held(): HeldMigration | undefined {
    return this.#held;
  }

  /** Applies the migrations this node missed (a failure holds, it does not throw), then follows the stream. */
  async open(): Promise<void> {
    this.#sub = this.#deps.nc.subscribe(migrationSubject(this.options.subjectPrefix), {
      callback: () => this.#wake.notify(),
    });
    await this.catchUp();
    this.#loop = this.#run(this.#abort.signal);
  }

  async close(): Promise<void> {
    this.#abort.abort();
    this.#sub?.unsubscribe();
    await this.#loop;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await this.#wake.waitFor(this.options.retryMs, signal);
      if (signal.aborted) return;
      await this.catchUp();
    }
  }

  /** Applies every migration after this node's position, in order, up to the first that fails. */
  async catchUp(): Promise<void> {
    const { jsm, db, logger } = this.#deps;
    const { streamPrefix } = this.options;
    let lastSeq: number;
    try {
      ({ lastSeq } = await migrationStreamState(jsm, streamPrefix));
    } catch (err) {
      if (!this.#abort.signal.aborted)
        logger.debug({ err: String(err) }, 'migration stream not readable; retried');
      return;
    }
    this.position = migrationPosition(db);
    for (let seq = this.position + 1; seq <= lastSeq && !this.#abort.signal.aborted; seq++) {
      const done = migrationRecord(db, seq);
      if (done !== undefined && done.status !== 'failed') {
        this.position = seq;
        continue;
      }
      let m;
      try {
        m = await readMigration(jsm, streamPrefix, seq);
      } catch (err) {
        logger.debug({ err: String(err), seq }, 'reading the migration stream failed; retried');
        return;
      }
      if (typeof m === 'string') {
        const what = m === 'missing' ? 'missing from the migration stream' : 'not a migration';
        this.#hold({ seq, name: '', statement: undefined, error: `message ${seq} is ${what}` });
        return;
      }
      const same = appliedHash(db, m.hash);
      if (same !== undefined) {
        await this.#deps.writer.run(() =>
          recordMigration(db, {
            seq,
            hash: m.hash,
            name: m.name,
            status: 'resolved',
            error: `same content as migration ${same}, applied before`,
          }),
        );
        logger.info(
          { migration: seq, name: m.name, same_as: same },
          'migration already applied here: passed over',
        );
        this.position = seq;
        continue;
      }
      let result: MigrationResult;
      const started = performance.now();
      try {
        result = await this.#deps.writer.run(() =>
          runMigration(db, m, { filter: this.#deps.filter, install: this.#deps.install() }),
        );
      } catch (err) {
        const e = err instanceof MigrationError ? err : new MigrationError(String(err), undefined);
        const statement =
          e.statement === undefined
            ? undefined
            : `line ${e.statement.line}: ${e.statement.text.replace(/\s+/g, ' ')}`;
        // Read and written in one transaction: an operator's -migrate-resolved made meanwhile wins.
        const resolved = await this.#deps.writer.run(() =>
          db
            .transaction(() => {
              const before = migrationRecord(db, seq);
              if (before !== undefined && before.status !== 'failed') return true;
              // Rewritten only when the failure changed: a held migration is retried every retryMs.
              if (before?.error !== e.message || before.statement !== (statement ?? null))
                recordMigration(db, {
                  seq,
                  hash: m.hash,
                  name: m.name,
                  status: 'failed',
                  statement: statement ?? null,
                  error: e.message,
                });
              return false;
            })
            .immediate(),
        );
        if (resolved) {
          this.position = seq;
          continue;
        }
        this.#deps.metrics.migrationFailures.inc();
        this.#hold({ seq, name: m.name, statement, error: e.message });
        return;
      }
      this.position = seq;
      this.#deps.metrics.migrationsApplied.inc();
      if (this.#held !== undefined) {
        logger.info({ migration: seq, name: m.name }, 'held migration applied: the migration stream goes on');
        this.#held = undefined;
        this.#deps.metrics.migrationHeld.set(0);
      }
      logger.info(
        {
          migration: seq,
          name: m.name,
          statements: result.statements,
          tables: result.tables,
          ms: Math.round(performance.now() - started),
        },
        'migration applied',
      );
      this.#deps.onApplied(result.capture);
    }
    if (this.#held !== undefined && this.position >= this.#held.seq) {
      logger.info(
        { migration: this.#held.seq },
        'held migration resolved by the operator: the migration stream goes on',
      );
      this.#held = undefined;
      this.#deps.metrics.migrationHeld.set(0);
    }
  }

  #hold(h: Omit<HeldMigration, 'since'>): void {
    const { logger, metrics } = this.#deps;
    const previous = this.#held;
    const fresh = previous?.seq !== h.seq || previous.error !== h.error;
    this.#held = { ...h, since: fresh ? Date.now() : (previous?.since ?? Date.now()) };
    metrics.migrationHeld.set(1);
    const fields = {
      node: this.options.nodeId,
      migration: h.seq,
      name: h.name,
      ...(h.statement === undefined ? {} : { statement: h.statement }),
      error: h.error,
      fix: `fix the cause on this node (it is retried every ${this.options.retryMs} ms), or mark it done with: harmonylite -config <file> -migrate-resolved ${h.seq}`,
    };
    if (fresh) {
      this.#heldLoggedAt = Date.now();
      logger.error(fields, 'migration failed on this node: the migration stream is held');
    } else if (Date.now() - this.#heldLoggedAt >= HELD_REMINDER_MS) {
      this.#heldLoggedAt = Date.now();
      logger.warn(fields, 'migration still held on this node');
    }
  }
}
