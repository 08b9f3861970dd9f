import type Database from 'better-sqlite3';
import { JetStreamApiCodes, JetStreamApiError, type JetStreamManager } from '@nats-io/jetstream';
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

/** A replaced stream whose new messages this node has not yet all replayed. */
interface Recovery {
  readonly stream: string;
  /** The new stream's last sequence when the replacement was found. */
  readonly untilSeq: number;
}

function notFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound;
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
  readonly #options: StreamIdentitiesOptions;
  readonly #recovering = new Map<number, Recovery>();
  readonly #broken = new Map<number, string>();

  constructor(deps: StreamIdentitiesDeps, options: StreamIdentitiesOptions) {
    this.#deps = deps;
    this.#options = options;
  }

  /** At start, after the streams exist and before consumers read their positions. */
  async reconcile(only?: readonly number[]): Promise<void> {
    const { db, jsm, writer, logger, metrics } = this.#deps;
    await writer.run(() =>
      db.exec(
        `CREATE TABLE IF NOT EXISTS ${q(STREAM_IDENTITIES)} (shard INTEGER PRIMARY KEY, stream TEXT NOT NULL, created TEXT NOT NULL, recorded_at INTEGER NOT NULL)`,
      ),
    );
    for (const [shard, stream] of this.#options.streams) {
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
              `INSERT INTO ${q(STREAM_IDENTITIES)} (shard, stream, created, recorded_at) VALUES (?, ?, ?, ?) ON CONFLICT (shard) DO UPDATE SET stream = excluded.stream, created = excluded.created, recorded_at = excluded.recorded_at`,
            ).run(shard, stream, created, Date.now());
            return old;
          })
          .immediate(),
      );
      const reported = this.#broken.delete(shard); // found on reconnect: counted and logged then
      if (replaced === undefined) continue;
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
        `stream ${stream} was recreated (the JetStream store was wiped or replaced): its sequences start again at 1, so this node's position ${replaced.position} belonged to the old stream; replaying the new stream from its start. Changes the old stream held that this node had not applied are lost with it: if this node was behind, restore it from a snapshot`,
      );
    }
  }

  /**
   * After a reconnect: the shards whose stream is missing or is not the one
   * their positions belong to (logged, counted, health degraded until
   * `reconcile` ran for them). Throws when JetStream does not answer.
   */
  async recheck(): Promise<number[]> {
    const { jsm, logger, metrics } = this.#deps;
    const changed: number[] = [];
    for (const [shard, stream] of this.#options.streams) {
      let created: string | undefined;
      try {
        created = (await jsm.streams.info(stream)).created;
      } catch (err) {
        if (!notFound(err)) throw err;
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
