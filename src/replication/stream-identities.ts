import type Database from 'better-sqlite3';
import type { JetStreamManager } from '@nats-io/jetstream';
import { isStreamNotFound } from '../nats/nats-errors.ts';
import { quoteIdent as q, STREAM_IDENTITIES } from '../cdc/names.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { resetStreamPosition } from './reset-stream-position.ts';
import type { WriterQueue } from '../sqlite/writer-queue.ts';

export interface StreamIdentitiesDeps {
  /** The node's write connection (used on the writer queue). */
  readonly db: Database.Database;
  readonly jsm: JetStreamManager;
  readonly writer: WriterQueue;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

export interface StreamIdentitiesOptions {
  /** Shard number to stream name, for every shard this node consumes. */
  readonly streams: ReadonlyMap<number, string>;
}

/** A stream found recreated by `reconcile`: this node's position in the old one was reset. */
export interface ReplacedStream {
  readonly shard: number;
  readonly stream: string;
  /** The new stream's creation time (stream info `created`). */
  readonly created: string;
  /** This node's position in the old stream. */
  readonly oldPosition: number;
}

/** A replaced stream whose new messages this node has not yet all replayed. */
interface Recovery {
  readonly stream: string;
  /** The new stream's last sequence when the replacement was found. */
  readonly untilSeq: number;
}

/**
 * Which stream each stored position belongs to (design.md, invariant 10). A
 * position is a sequence of one stream: a stream recreated under the same name
 * (a wiped JetStream store, new servers) starts again at 1, and a consumer
 * resuming after its old position would skip every new message up to it. The
 * identity is the stream's creation time (stream info `created`, on nats-server
 * 2.9), stored per shard in `__harmonylite___stream_identities`.
 * - At start (`reconcile`, before consumers open): a first sighting is recorded;
 *   a different one is logged as an error, counted
 *   (`stream_replaced_total`), and the shard's position is reset to 0 in the
 *   transaction that records the new identity, so the whole new stream is
 *   replayed; health stays degraded (`problems`) until it has been. Changes the
 *   old stream held that this node had not applied are gone with it.
 * - On reconnect (`recheck`): a replaced or missing stream is logged and
 *   counted; the node recreates missing streams, restarts the shard's consumer
 *   after `reconcile` for it, and health is degraded until that is done and the
 *   new stream replayed.
 */
export class StreamIdentities {
  readonly #deps: StreamIdentitiesDeps;
  readonly #streams: Map<number, string>;
  readonly #recovering = new Map<number, Recovery>();
  readonly #broken = new Map<number, string>();

  constructor(deps: StreamIdentitiesDeps, options: StreamIdentitiesOptions) {
    this.#deps = deps;
    this.#streams = new Map(options.streams);
  }

  /** A shard stream found after the start (another node publishes with more shards); `reconcile([shard])` next. */
  add(shard: number, stream: string): void {
    this.#streams.set(shard, stream);
  }

  /**
   * At start, after the streams exist and before consumers read their positions.
   * Resolves with the streams found recreated (their positions reset to 0).
   */
  async reconcile(only?: readonly number[]): Promise<ReplacedStream[]> {
    const found: ReplacedStream[] = [];
    const { db, jsm, writer, logger, metrics } = this.#deps;
    await writer.run(() => {
      db.exec(
        `CREATE TABLE IF NOT EXISTS ${q(STREAM_IDENTITIES)} (shard INTEGER PRIMARY KEY, stream TEXT NOT NULL, created TEXT NOT NULL, recorded_at INTEGER NOT NULL)`,
      );
      // The old position while the start's restore check (restoreDue) is still to run for this stream.
      if (!this.#tracksReplacements())
        db.exec(`ALTER TABLE ${q(STREAM_IDENTITIES)} ADD COLUMN replaced_from INTEGER`);
    });
    for (const [shard, stream] of this.#streams) {
      if (only !== undefined && !only.includes(shard)) continue;
      const info = await jsm.streams.info(stream);
      const created = info.created;
      const replaced = await writer.run(() =>
        db
          .transaction(() => {
            const stored = this.#stored(shard);
            if (stored !== undefined && stored.stream === stream && stored.created === created)
              return undefined;
            // Another name (the prefix changed): a different stream too, whose positions are not ours.
            const old =
              stored === undefined ? undefined : { ...stored, position: resetStreamPosition(db, shard) };
            db.prepare(
              `INSERT INTO ${q(STREAM_IDENTITIES)} (shard, stream, created, recorded_at, replaced_from) VALUES (?, ?, ?, ?, ?) ON CONFLICT (shard) DO UPDATE SET stream = excluded.stream, created = excluded.created, recorded_at = excluded.recorded_at, replaced_from = excluded.replaced_from`,
            ).run(shard, stream, created, Date.now(), old === undefined ? null : old.position);
            return old;
          })
          .immediate(),
      );
      const reported = this.#broken.delete(shard); // found on reconnect: counted and logged then
      if (replaced === undefined) continue;
      found.push({ shard, stream, created, oldPosition: replaced.position });
      if (!reported) metrics.streamReplaced.inc({ shard: String(shard) });
      const untilSeq = info.state.last_seq;
      if (untilSeq > 0) {
        this.#recovering.set(shard, { stream, untilSeq });
        metrics.streamRecovering.set({ shard: String(shard) }, 1);
      }
      logger.error(
        {
          shard,
          stream,
          created,
          previous_created: replaced.created,
          previous_stream: replaced.stream,
          old_position: replaced.position,
          replay_until: untilSeq,
        },
        `stream ${stream} was recreated (the JetStream store was wiped or replaced): its sequences start again at 1, so this node's position ${replaced.position} belonged to the old stream; its position is reset to replay the new stream from its start. Changes the old stream held that this node had not applied are gone with it: at start, a snapshot made since the streams were recreated is restored first when one reaches them`,
      );
    }
    return found;
  }

  /**
   * Streams found recreated, at this start or while the node ran, whose restore
   * check has not run yet (a start checks whether a snapshot made since reaches
   * them: the node may have been behind in the old streams).
   */
  async restoreDue(): Promise<ReplacedStream[]> {
    const { db, writer } = this.#deps;
    return writer.run(() => {
      if (!this.#tracksReplacements()) return [];
      const rows = db
        .prepare(
          `SELECT shard, stream, created, replaced_from AS oldPosition FROM ${q(STREAM_IDENTITIES)} WHERE replaced_from IS NOT NULL ORDER BY shard`,
        )
        .all() as ReplacedStream[];
      return rows;
    });
  }

  /** The start's restore check ran (restored or decided to replay): not due again. */
  async restoreChecked(): Promise<void> {
    const { db, writer } = this.#deps;
    await writer.run(() => {
      if (!this.#tracksReplacements()) return;
      db.prepare(
        `UPDATE ${q(STREAM_IDENTITIES)} SET replaced_from = NULL WHERE replaced_from IS NOT NULL`,
      ).run();
    });
  }

  /**
   * After a reconnect: the shards whose stream is missing or is not the one
   * their positions belong to (logged, counted, health degraded until
   * `reconcile` ran for them). Throws when JetStream does not answer.
   */
  async recheck(): Promise<number[]> {
    const { jsm, logger, metrics } = this.#deps;
    const changed: number[] = [];
    for (const [shard, stream] of this.#streams) {
      let created: string | undefined;
      try {
        created = (await jsm.streams.info(stream)).created;
      } catch (err) {
        if (!isStreamNotFound(err)) throw err;
      }
      const stored = this.#stored(shard);
      if (stored === undefined || created === stored.created) continue;
      changed.push(shard);
      if (this.#broken.has(shard)) continue;
      const problem =
        created === undefined
          ? `stream ${stream} no longer exists (the JetStream store was wiped, or the stream deleted): recreating it and replaying it from its start`
          : `stream ${stream} was recreated while this node ran (created ${created}, was ${stored.created}): replaying it from its start`;
      this.#broken.set(shard, problem);
      metrics.streamReplaced.inc({ shard: String(shard) });
      logger.error({ shard, stream, created: created ?? null, previous_created: stored.created }, problem);
    }
    return changed;
  }

  /**
   * Reasons health is degraded: replaced streams found while running, and
   * replaced streams not yet replayed up to where they ended when found.
   * `position` gives a shard's applied position.
   */
  problems(position: (shard: number) => number | undefined): string[] {
    for (const [shard, r] of this.#recovering) {
      if ((position(shard) ?? 0) >= r.untilSeq) {
        this.#recovering.delete(shard);
        this.#deps.metrics.streamRecovering.set({ shard: String(shard) }, 0);
        this.#deps.logger.info(
          { shard, stream: r.stream, position: r.untilSeq },
          'replayed the recreated stream',
        );
      }
    }
    return [
      ...[...this.#recovering].map(
        ([shard, r]) => `shard ${shard}: replaying stream ${r.stream}, recreated, up to ${r.untilSeq}`,
      ),
      ...this.#broken.values(),
    ];
  }

  /** The identity recorded for a shard; none before the first start or after a snapshot restore (not in snapshots). */
  /** The table exists with its `replaced_from` column (a restored snapshot's may have neither). */
  #tracksReplacements(): boolean {
    const cols = this.#deps.db
      .prepare('SELECT name FROM pragma_table_info(?)')
      .pluck()
      .all(STREAM_IDENTITIES);
    return cols.includes('replaced_from');
  }

  #stored(shard: number): { stream: string; created: string } | undefined {
    const table = this.#deps.db
      .prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?")
      .pluck()
      .get(STREAM_IDENTITIES);
    if (table === undefined) return undefined;
    return this.#deps.db
      .prepare(`SELECT stream, created FROM ${q(STREAM_IDENTITIES)} WHERE shard = ?`)
      .get(shard) as { stream: string; created: string } | undefined;
  }
}
