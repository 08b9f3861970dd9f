export interface RetryOptions {
  /** Total tries including the first; 1 = no retry. */
  readonly attempts: number;
  /** Delay before the first retry; doubles on each further retry (with jitter). */
  readonly baseDelayMs: number;
  /** Upper bound of one delay. Default 5000. */
  readonly maxDelayMs?: number;
  /** Stops retrying (and the delay between tries) as soon as it fires. */
  readonly signal?: AbortSignal | undefined;
  /**
   * Whether a failure may succeed when tried again (connection reset, HTTP 5xx,
   * timeouts). Everything else (auth, not found, bad request) fails at once.
   */
  readonly isTransient: (err: unknown) => boolean;
}

/** Defaults for snapshot stores: three tries within about a second, so an unreachable server fails fast. */
export const DEFAULT_STORE_RETRY = { attempts: 3, baseDelayMs: 250 } as const;

/**
 * Runs `fn` until it succeeds, fails with a non-transient error, or `attempts`
 * tries are used up; then rethrows the last error unchanged. `fn` gets the
 * 1-based attempt number and must be safe to repeat (every store operation is:
 * uploads restart from the local file under a new temporary name).
 * If `signal` fires, the current error (or the signal's reason while waiting)
 * is thrown without a further try.
 */
export async function withRetry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const maxDelayMs = options.maxDelayMs ?? 5000;
  for (let attempt = 1; ; attempt++) {
    options.signal?.throwIfAborted();
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= options.attempts || options.signal?.aborted || !options.isTransient(err)) throw err;
      const ceilingMs = Math.min(maxDelayMs, options.baseDelayMs * 2 ** (attempt - 1));
      // "Equal jitter": half fixed, half random, so many nodes retrying one server spread out.
      await sleep(ceilingMs / 2 + (Math.random() * ceilingMs) / 2, options.signal);
    }
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
