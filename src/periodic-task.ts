/**
 * Runs an async step now and then every `intervalMs`, never two at once; `close()`
 * stops the timer and waits for a step in progress. The step must never reject.
 */
export class PeriodicTask {
  readonly #step: () => Promise<void>;
  readonly #intervalMs: number;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #closed = false;

  constructor(step: () => Promise<void>, intervalMs: number) {
    this.#step = step;
    this.#intervalMs = intervalMs;
  }

  /** True once close() was called: a step in progress may stop early. */
  get closed(): boolean {
    return this.#closed;
  }

  open(): void {
    this.#closed = false;
    const tick = () => {
      this.#running ??= this.#step().finally(() => (this.#running = undefined));
    };
    tick();
    this.#timer = setInterval(tick, this.#intervalMs).unref();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }
}
