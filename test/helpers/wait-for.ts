/**
 * Polls `check` until it returns a value other than undefined/false, or fails
 * after `timeoutMs` with a message saying what was expected and what was last seen.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  options: { timeoutMs?: number; intervalMs?: number; seen?: () => unknown } = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 20_000;
  const intervalMs = options.intervalMs ?? 25;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const seen = options.seen
        ? ` last seen: ${JSON.stringify(options.seen(), (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))}`
        : '';
      const err = lastError ? ` last error: ${(lastError as Error).message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}.${seen}${err}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
