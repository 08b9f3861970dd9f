/**
 * Serializes every write the daemon makes (apply, mark published, outbox,
 * cleanup, checkpoint) so it never fights itself for SQLite's one write lock
 * (Marmot #36, "database is locked"). Jobs run one at a time in FIFO order and
 * keep their transactions short, so applications rarely wait; the busy timeout
 * of each connection covers the rest.
 */
export class WriterQueue {
  #tail: Promise<unknown> = Promise.resolve();
  #depth = 0;
  /** Called with the time a job waited for its turn, ms. */
  onWait: ((ms: number) => void) | undefined;

  /** Jobs queued or running. */
  get depth(): number {
    return this.#depth;
  }

  run<T>(job: () => T | Promise<T>): Promise<T> {
    const queuedAt = performance.now();
    this.#depth++;
    const result = this.#tail.then(async () => {
      this.onWait?.(performance.now() - queuedAt);
      try {
        return await job();
      } finally {
        this.#depth--;
      }
    });
    this.#tail = result.catch(() => undefined);
    return result;
  }

  /** Resolves when every job queued so far has finished. */
  async drain(): Promise<void> {
    await this.#tail;
  }
}
