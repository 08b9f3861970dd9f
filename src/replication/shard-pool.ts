import { Piscina } from 'piscina';
import type { ApplyResult, InboundMessage } from './batch-applier.ts';
import { WorkerDiedError } from './worker-died-error.ts';

/** What each shard worker is started with (structured-cloned to it). */
export interface ShardWorkerData {
  readonly dbPath: string;
  readonly busyTimeoutMs: number;
  readonly includeTables: readonly string[];
  readonly excludeTables: readonly string[];
  readonly nodeId: number;
  /** The node's hybrid clock (HybridClock.state: shared memory, the same cell in every worker). */
  readonly clock: BigInt64Array;
  /** The application's writes here are captured and published. */
  readonly localWrites: boolean;
  readonly maxClockSkewMs: number;
}

const here = import.meta.url;
/** The compiled worker, or under tsx (tests, development) a bootstrap that registers tsx in the worker first. */
const WORKER_FILE = new URL(
  here.endsWith('.ts') ? '../../workers/shard-worker.tsx-bootstrap.mjs' : '../../workers/shard-worker.js',
  here,
).href;

/**
 * A worker's young generation (V8's default is sized for a whole process, up to
 * 48 MB per worker). Decoding allocates short-lived objects only, so a small one
 * costs no measurable CPU and took ~15 MB off a receiver's peak RSS per worker (bench/pipeline.ts).
 */
const WORKER_YOUNG_GENERATION_MB = 8;

export interface ShardPoolOptions {
  /** Old-generation heap limit of each worker, MB; 0 = V8's default. A worker over it dies (WorkerDiedError). */
  readonly workerHeapMb: number;
}

/**
 * One piscina worker per shard (design card), so a shard's applies always run
 * on the same thread and SQLite connection. Measured: a task costs ~37 µs, so
 * callers send whole batches, never single rows.
 */
export class ShardPool {
  readonly #pools = new Map<number, Piscina>();
  readonly #data: ShardWorkerData;
  readonly #options: ShardPoolOptions;
  #schemaEpoch = 0;

  /** `shards`: a count (shards 1..n) or the shard numbers to start workers for. */
  constructor(
    shards: number | readonly number[],
    data: ShardWorkerData,
    options: ShardPoolOptions = { workerHeapMb: 0 },
  ) {
    this.#data = data;
    this.#options = options;
    const numbers = typeof shards === 'number' ? Array.from({ length: shards }, (_, i) => i + 1) : shards;
    for (const shard of numbers) this.add(shard);
  }

  /** Starts the worker of a shard stream found later (a node publishing with more shards); idempotent. */
  add(shard: number): void {
    if (this.#pools.has(shard)) return;
    this.#pools.set(
      shard,
      new Piscina({
        filename: WORKER_FILE,
        minThreads: 1,
        maxThreads: 1,
        idleTimeout: Number.POSITIVE_INFINITY,
        workerData: this.#data,
        resourceLimits: {
          maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB,
          ...(this.#options.workerHeapMb > 0 ? { maxOldGenerationSizeMb: this.#options.workerHeapMb } : {}),
        },
      }),
    );
  }

  #pool(shard: number): Piscina {
    const p = this.#pools.get(shard);
    if (p === undefined) throw new RangeError(`no shard ${shard}`);
    return p;
  }

  /** Tell workers to re-read table layouts before their next apply. */
  schemaChanged(): void {
    this.#schemaEpoch++;
  }

  apply(shard: number, messages: InboundMessage[]): Promise<ApplyResult>;
  /** With `lockWaitMs`: undefined when SQLite's write lock stayed taken that long (nothing applied). */
  apply(shard: number, messages: InboundMessage[], lockWaitMs: number): Promise<ApplyResult | undefined>;
  async apply(
    shard: number,
    messages: InboundMessage[],
    lockWaitMs?: number,
  ): Promise<ApplyResult | undefined> {
    const pool = this.#pool(shard);
    const worker = pool.threads[0];
    try {
      return (await pool.run(
        { shard, messages, schemaEpoch: this.#schemaEpoch, lockWaitMs },
        { name: 'apply' },
      )) as ApplyResult | undefined;
    } catch (err) {
      // Piscina replaces a dead worker before it fails the dead worker's tasks.
      if (worker !== undefined && pool.threads[0] !== worker) throw new WorkerDiedError(shard, err);
      throw err;
    }
  }

  position(shard: number): Promise<number> {
    return this.#pool(shard).run({ shard }, { name: 'position' }) as Promise<number>;
  }

  deadLetter(shard: number, message: InboundMessage, reason: string): Promise<void> {
    return this.#pool(shard).run({ shard, message, reason }, { name: 'deadLetter' }) as Promise<void>;
  }

  /** Busy fraction of the workers since start, 0..1 (for the pool-utilization metric). */
  utilization(): number {
    if (this.#pools.size === 0) return 0;
    let sum = 0;
    for (const p of this.#pools.values()) sum += p.utilization;
    return sum / this.#pools.size;
  }

  async close(): Promise<void> {
    await Promise.all(
      [...this.#pools.values()].map(async (p) => {
        await p.run({}, { name: 'close' }).catch(() => undefined);
        await p.destroy();
      }),
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
