import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { errorMessage } from '../error-message.ts';
import { manifestPosition, type SnapshotManifest } from './snapshot-manifest.ts';

export interface SnapshotSchedulerOptions {
  /** Only the leader takes snapshots. */
  readonly isLeader: () => boolean;
  /** Takes and stores one snapshot (logs its own outcome); resolves with its manifest. */
  readonly save: (signal: AbortSignal) => Promise<SnapshotManifest>;
  /** The newest stored snapshot: the baseline a new leader counts from. */
  readonly latest: (signal: AbortSignal) => Promise<SnapshotManifest | undefined>;
  /** This node's applied stream position per shard. */
  readonly positions: () => ReadonlyMap<number, number>;
  /** The seed's threshold: a snapshot once any shard advanced this many messages (`max_entries ÷ shards`). */
  readonly thresholdMessages: number;
  /** `[snapshot] interval`: also a snapshot this long after the last one; 0 = off. */
  readonly intervalMs: number;
  /** How often the conditions are checked. Default 1 s. */
  readonly checkIntervalMs?: number;
  readonly logger: Logger;
  readonly metrics?: Metrics | undefined;
}

interface Baseline {
  readonly positions: ReadonlyMap<number, number>;
  /** When the last snapshot was taken, or leadership began when there is none. */
  readonly at: number;
  readonly fromSnapshot: boolean;
}

const MAX_BACKOFF_MS = 5 * 60_000;
const FIRST_BACKOFF_MS = 5000;

/**
 * Decides when the leader takes a snapshot: when any shard's applied position
 * advanced by the threshold since the newest stored snapshot (so the streams,
 * which keep `max_entries` messages, never run past every snapshot), and every
 * `intervalMs` when set. A failed save is retried with backoff (5 s doubling
 * to 5 min). A new leader counts from the newest snapshot in the store, not
 * from zero, so a change of leader does not cause an extra snapshot.
 */
export class SnapshotScheduler {
  readonly #options: SnapshotSchedulerOptions;
  readonly #abort = new AbortController();
  #loop: Promise<void> | undefined;
  #baseline: Baseline | undefined;
  #requested: string | undefined;
  #saving = false;

  constructor(options: SnapshotSchedulerOptions) {
    this.#options = options;
  }

  open(): void {
    this.#loop ??= this.#run(this.#abort.signal);
  }

  /**
   * Takes a snapshot at the next check, when leader, whatever the threshold
   * and interval say (a node asked for one it can restore). A request while a
   * save runs is served by that save: the asker checks again when it is stored.
   */
  requestSnapshot(reason: string): void {
    if (!this.#saving) this.#requested ??= reason;
  }

  async close(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Why a snapshot is due now, or undefined. */
  #due(baseline: Baseline, now: number): string | undefined {
    if (this.#requested !== undefined) return this.#requested;
    const { thresholdMessages, intervalMs } = this.#options;
    for (const [shard, position] of this.#options.positions()) {
      const advanced = position - (baseline.positions.get(shard) ?? 0);
      if (advanced >= thresholdMessages) return `shard ${shard} advanced ${advanced} messages`;
    }
    if (intervalMs > 0 && now - baseline.at >= intervalMs) return `interval of ${intervalMs} ms elapsed`;
    return undefined;
  }

  async #run(signal: AbortSignal): Promise<void> {
    const { logger, metrics } = this.#options;
    const checkMs = this.#options.checkIntervalMs ?? 1000;
    let failures = 0;
    let retryAt = 0;
    while (!signal.aborted) {
      await sleep(checkMs, signal);
      if (signal.aborted) break;
      if (!this.#options.isLeader()) {
        this.#baseline = undefined;
        this.#requested = undefined; // the asker asks again, and the new leader answers
        continue;
      }
      const now = Date.now();
      try {
        if (this.#baseline === undefined) {
          const latest = await this.#options.latest(signal);
          this.#baseline = latest
            ? baselineOf(latest)
            : { positions: new Map(), at: now, fromSnapshot: false };
        }
        if (this.#baseline.fromSnapshot) metrics?.snapshotAge.set((now - this.#baseline.at) / 1000);
        if (now < retryAt) continue;
        const reason = this.#due(this.#baseline, now);
        if (reason === undefined) continue;
        logger.info({ reason }, 'taking a snapshot');
        this.#requested = undefined;
        this.#saving = true;
        try {
          this.#baseline = baselineOf(await this.#options.save(signal));
        } finally {
          this.#saving = false;
        }
        failures = 0;
        retryAt = 0;
      } catch (err) {
        if (signal.aborted) break;
        failures++;
        const backoffMs = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** (failures - 1));
        retryAt = Date.now() + backoffMs;
        logger.warn({ err: errorMessage(err), retry_in_ms: backoffMs }, 'snapshot scheduling step failed');
      }
    }
  }
}

function baselineOf(m: SnapshotManifest): Baseline {
  const positions = new Map<number, number>();
  // Every stream it holds a position for (its node may have consumed streams beyond its shards).
  for (const shard of Object.keys(m.positions))
    positions.set(Number(shard), manifestPosition(m, Number(shard)));
  return { positions, at: m.createdAt, fromSnapshot: true };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(t);
      resolve();
    };
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
