/**
 * Serializes every write the daemon makes (apply, mark published, outbox,
 * cleanup, checkpoint) so it never fights itself for SQLite's one write lock
 * (Marmot #36, "database is locked"). Jobs run one at a time and keep their
 * transactions short, so applications rarely wait; the busy timeout of each
 * connection covers the rest.
 *
 * Two lanes: `urgent` jobs (the publisher's outbox writes: a few statements
 * each, on the commit-to-visible path) run before queued `normal` jobs (apply
 * batches, cleanup), FIFO within a lane. A normal job may carry a weight (a
 * shard's waiting messages, capped by its batch limit): the heaviest queued job
 * goes first, so the shard with the most waiting gets the lock and commits
 * fewer, larger transactions; unweighted jobs and ties keep FIFO order. The cap
 * bounds the wait of a light job: shards at the cap tie. A running job is never
 * interrupted.
 */
export type WriterLane = 'urgent' | 'normal';

interface Job {
  readonly run: () => Promise<void>;
  readonly queuedAt: number;
  readonly weight: (() => number) | undefined;
}

export class WriterQueue {
  readonly #lanes: Record<WriterLane, Job[]> = { urgent: [], normal: [] };
  #running = false;
  #idle: (() => void)[] = [];
  /** Called with the time a job waited for its turn, ms. */
  onWait: ((ms: number) => void) | undefined;

  /** Jobs queued or running. */
  get depth(): number {
    return this.#lanes.urgent.length + this.#lanes.normal.length + (this.#running ? 1 : 0);
  }

  /** `weight`, read when a job is chosen: see the class comment. */
  run<T>(job: () => T | Promise<T>, lane: WriterLane = 'normal', weight?: () => number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#lanes[lane].push({
        queuedAt: performance.now(),
        weight,
        run: async () => {
          try {
            resolve(await job());
          } catch (err) {
            reject(err);
          }
        },
      });
      if (!this.#running) void this.#pump();
    });
  }

  async #pump(): Promise<void> {
    this.#running = true;
    for (;;) {
      const job = this.#lanes.urgent.shift() ?? this.#nextNormal();
      if (job === undefined) break;
      this.onWait?.(performance.now() - job.queuedAt);
      await job.run();
    }
    this.#running = false;
    const idle = this.#idle;
    this.#idle = [];
    for (const r of idle) r();
  }

  #nextNormal(): Job | undefined {
    const lane = this.#lanes.normal;
    // An unweighted job at the head (cleanup, checkpoint) is never passed over.
    if (lane.length < 2 || lane[0]!.weight === undefined) return lane.shift();
    let best = 0;
    let bestWeight = lane[0]!.weight();
    for (let i = 1; i < lane.length; i++) {
      const w = lane[i]!.weight;
      if (w === undefined) break;
      const v = w();
      if (v > bestWeight) {
        best = i;
        bestWeight = v;
      }
    }
    return lane.splice(best, 1)[0];
  }

  /** Resolves when every job queued so far (and any queued meanwhile) has finished. */
  drain(): Promise<void> {
    if (!this.#running) return Promise.resolve();
    return new Promise((r) => this.#idle.push(r));
  }
}
