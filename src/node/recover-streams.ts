import type { Logger } from '../logger.ts';
import type { StreamIdentities } from '../replication/stream-identities.ts';

export interface RecoverStreamsOptions {
  readonly identities: StreamIdentities;
  /** Creates the streams that are missing (idempotent). */
  readonly ensureStreams: () => Promise<unknown>;
  /**
   * Stops the shard's consumer, runs `reconcile` (which resets its position
   * when its stream was replaced) and starts a new consumer from there.
   */
  readonly restartConsumer: (shard: number, reconcile: () => Promise<void>) => Promise<void>;
  /** Runs a JetStream step, retrying while JetStream is not ready yet. */
  readonly retry: <T>(what: string, fn: () => Promise<T>) => Promise<T>;
  readonly logger: Logger;
}

/**
 * A running node's recovery from streams lost or recreated while it was
 * disconnected (a wiped JetStream store): missing streams are created again,
 * then each affected shard's consumer is restarted from the start of its new
 * stream, its stored position reset first (design.md, invariant 10: never
 * skip the new stream's messages below the old position). Shards whose
 * stream is unchanged are not touched.
 */
export async function recoverStreams(o: RecoverStreamsOptions): Promise<void> {
  const shards = await o.retry('check the streams', () => o.identities.recheck());
  if (shards.length === 0) return;
  await o.ensureStreams();
  for (const shard of shards)
    await o.restartConsumer(shard, async () => {
      await o.retry('check the streams', () => o.identities.reconcile([shard]));
    });
  o.logger.info({ shards }, 'replaying the recreated streams from their start');
  o.logger.error(
    { shards },
    'this node may have been behind in the streams that were lost, and what they held is gone: its next start restores a snapshot made since they were recreated when one reaches them (take one on an up-to-date node with -save-snapshot, then restart this node)',
  );
}
