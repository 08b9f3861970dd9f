import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { withRetry } from '../../../src/snapshot/stores/retry.ts';

class Transient extends Error {}

describe('withRetry', () => {
  it('retries transient failures until one succeeds, with growing delays', async () => {
    const startedAt: number[] = [];
    const result = await withRetry(
      async (attempt) => {
        startedAt.push(performance.now());
        if (attempt < 3) throw new Transient(`try ${attempt}`);
        return 'ok';
      },
      { attempts: 5, baseDelayMs: 40, isTransient: (e) => e instanceof Transient },
    );
    assert.equal(result, 'ok');
    assert.equal(startedAt.length, 3);
    const [a, b, c] = startedAt as [number, number, number];
    assert.ok(b - a >= 19, `first delay ${b - a} ms is at least half of 40`);
    assert.ok(c - b >= 39, `second delay ${c - b} ms is at least half of 80`);
  });

  it('gives up after `attempts` tries and rethrows the last error unchanged', async () => {
    let tries = 0;
    const last = new Transient('third');
    await assert.rejects(
      withRetry(
        async () => {
          tries++;
          throw tries === 3 ? last : new Transient('earlier');
        },
        { attempts: 3, baseDelayMs: 1, isTransient: () => true },
      ),
      (err) => err === last,
    );
    assert.equal(tries, 3);
  });

  it('does not retry a non-transient failure (auth, not found)', async () => {
    let tries = 0;
    await assert.rejects(
      withRetry(
        async () => {
          tries++;
          throw new Error('access denied');
        },
        { attempts: 5, baseDelayMs: 1, isTransient: (e) => e instanceof Transient },
      ),
      /access denied/,
    );
    assert.equal(tries, 1);
  });

  it('stops waiting between tries as soon as the signal fires', async () => {
    const controller = new AbortController();
    const startedMs = performance.now();
    const pending = withRetry(
      async () => {
        setTimeout(() => controller.abort(new Error('stop')), 20);
        throw new Transient('down');
      },
      { attempts: 5, baseDelayMs: 10_000, signal: controller.signal, isTransient: () => true },
    );
    await assert.rejects(pending, /stop/);
    assert.ok(performance.now() - startedMs < 2000);
  });

  it('does not start when the signal has already fired', async () => {
    let tries = 0;
    await assert.rejects(
      withRetry(
        async () => {
          tries++;
        },
        {
          attempts: 3,
          baseDelayMs: 1,
          signal: AbortSignal.abort(new Error('early')),
          isTransient: () => true,
        },
      ),
      /early/,
    );
    assert.equal(tries, 0);
  });
});
