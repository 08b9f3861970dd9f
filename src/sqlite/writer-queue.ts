/**
 * Serializes every write the daemon makes (apply, mark published, outbox,
 * cleanup, checkpoint) so it never fights itself for SQLite's one write lock
 * (Marmot #36, "database is locked"). Jobs run one at a time and keep their
 * transactions short, so applications rarely wait; the busy timeout of each
 * connection covers the rest.
 *
 * Two lanes: `urgent` jobs (the publisher's outbox writes: a few statements
 * each, on the commit-to-visible path) run before queued `normal` jobs (apply
 * batches, cleanup), FIFO within a lane. A running job is never interrupted.
 */
export type WriterLane = 'urgent' | 'normal';

interface Job {
  readonly run: () => Promise<void>;
  readonly queuedAt: number;
}

export class WriterQueue {
  readonly #lanes: Record<WriterLane, Job[]> = { urgent: [], normal: [] };
  #running = false;
  #idle: (() => void)[] = [];
  /** Called with the time a job waited for its turn, ms. */
  onWait: ((ms: number) => void) | undefined;
  /** Called with what a job threw, before its caller sees it (metrics count busy writes this way). */
  onError: ((err: unknown) => void) | undefined;

  /** Jobs queued or running. */
  get depth(): number {
    return this.#lanes.urgent.length + this.#lanes.normal.length + (this.#running ? 1 : 0);
  }

  run<T>(job: () => T | Promise<T>, lane: WriterLane = 'normal'): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#lanes[lane].push({
        queuedAt: performance.now(),
        run: async () => {
          try {
            resolve(await job());
          } catch (err) {
            this.onError?.(err);
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
      const job = this.#lanes.urgent.shift() ?? this.#lanes.normal.shift();
      if (job === undefined) break;
      this.onWait?.(performance.now() - job.queuedAt);
      await job.run();
    }
    this.#running = false;
    const idle = this.#idle;
    this.#idle = [];
    for (const r of idle) r();
  }

  /** Resolves when every job queued so far (and any queued meanwhile) has finished. */
  drain(): Promise<void> {
    if (!this.#running) return Promise.resolve();
    return new Promise((r) => this.#idle.push(r));
  }
}
