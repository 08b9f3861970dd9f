/** A level-triggered wake-up: `notify()` before `wait()` is not lost. */
export class Wakeup {
  #pending = false;
  #resolve: (() => void) | undefined;

  notify(): void {
    this.#pending = true;
    const r = this.#resolve;
    this.#resolve = undefined;
    r?.();
  }

  /** Resolves at the next notify (at once if one is pending), or when `signal` aborts. */
  wait(signal: AbortSignal): Promise<void> {
    if (this.#pending || signal.aborted) {
      this.#pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        signal.removeEventListener('abort', done);
        this.#pending = false;
        this.#resolve = undefined;
        resolve();
      };
      signal.addEventListener('abort', done, { once: true });
      this.#resolve = done;
    });
  }

  /** Like wait, but also resolves after `ms`. */
  async waitFor(ms: number, signal: AbortSignal): Promise<void> {
    const timer = AbortSignal.timeout(ms);
    await this.wait(AbortSignal.any([signal, timer]));
  }
}
