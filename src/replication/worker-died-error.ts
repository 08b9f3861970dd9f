/**
 * A shard worker thread died while it ran a task (out of memory, a native
 * crash): unlike an error the task throws, it says nothing about which message
 * caused it. The consumer then applies the first message alone, and a message
 * that kills a worker alone twice is dead-lettered (invariant 5).
 */
export class WorkerDiedError extends Error {
  override readonly name = 'WorkerDiedError';
  readonly code = 'ERR_WORKER_DIED';
  readonly shard: number;

  constructor(shard: number, cause: unknown) {
    super(`shard ${shard} worker died: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.shard = shard;
  }
}
