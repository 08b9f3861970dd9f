import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../logger.ts';
import { errorMessage } from '../error-message.ts';
import { isWrongLastSequence } from '../nats/nats-errors.ts';

export interface SnapshotLeaderOptions {
  readonly nc: NatsConnection;
  /** KV bucket of the lease (`leaseBucket()` in nats/naming.ts). */
  readonly bucket: string;
  readonly nodeId: number;
  /**
   * Lease lifetime: the bucket's max_age. A leader that stops renewing is
   * replaced this long after its last renewal. Used when this node creates the
   * bucket; an existing bucket's max_age wins. Default 15 s.
   */
  readonly ttlMs?: number;
  /** Replicas of the bucket's stream when this node creates it. Default 1. */
  readonly replicas?: number;
  readonly logger: Logger;
}

const KEY = 'leader';

/**
 * One snapshot leader at a time, through a lease in a NATS KV bucket whose
 * entries expire after the TTL (history 1).
 * - Winning: `create(key)` succeeds only when the key is absent (expired,
 *   deleted, never set); others retry every TTL/3.
 * - Holding: the leader renews with `update(key, value, revision)` every
 *   TTL/3; a revision mismatch means someone else holds it now: leadership is
 *   lost at once.
 * - Safety margin: a leader that could not renew for 2/3 of the TTL steps
 *   down by itself, before the server can expire its entry and let another
 *   node in, so two leaders never overlap (clocks aside: only durations on
 *   each side are compared).
 * - `close()` deletes the key when it still holds it, so a successor takes
 *   over at its next try instead of after the TTL.
 */
export class SnapshotLeader {
  readonly #options: SnapshotLeaderOptions;
  readonly #abort = new AbortController();
  readonly #listeners = new Set<(isLeader: boolean) => void>();
  #kv: KV | undefined;
  #ttlMs: number;
  #revision = 0;
  #lastRenewAt = 0;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;

  constructor(options: SnapshotLeaderOptions) {
    this.#options = options;
    this.#ttlMs = options.ttlMs ?? 15_000;
  }

  get isLeader(): boolean {
    return this.#revision > 0;
  }

  /** The lease lifetime in effect (the bucket's max_age). */
  get ttlMs(): number {
    return this.#ttlMs;
  }

  /** Called with the new state whenever leadership is won or lost; returns the remover. */
  onChange(listener: (isLeader: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Opens (or creates) the lease bucket and starts competing for the lease in the background. */
  async open(): Promise<void> {
    const kv = await new Kvm(this.#options.nc).create(this.#options.bucket, {
      history: 1,
      ttl: this.#ttlMs,
      replicas: this.#options.replicas ?? 1,
    });
    const actual = (await kv.status()).ttl;
    if (actual > 0) this.#ttlMs = actual;
    else
      this.#options.logger.warn(
        { bucket: this.#options.bucket },
        'lease bucket has no max_age; a dead leader is never replaced',
      );
    this.#kv = kv;
    this.#loop = this.#run(this.#abort.signal);
  }

  async close(): Promise<void> {
    this.#abort.abort();
    this.#wake?.();
    await this.#loop;
    if (this.isLeader && this.#kv !== undefined) {
      const revision = this.#revision;
      this.#setRevision(0, 'closing');
      await this.#kv.delete(KEY, { previousSeq: revision }).catch(() => undefined);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #run(signal: AbortSignal): Promise<void> {
    const value = () => JSON.stringify({ nodeId: this.#options.nodeId, renewedAt: Date.now() });
    while (!signal.aborted) {
      const kv = this.#kv!;
      if (this.isLeader) {
        try {
          const revision = await kv.update(KEY, value(), this.#revision);
          if (signal.aborted && revision > 0) {
            this.#revision = revision; // close() releases it
            break;
          }
          this.#revision = revision;
          this.#lastRenewAt = performance.now();
        } catch (err) {
          const message = errorMessage(err);
          if (isWrongLastSequence(err)) this.#setRevision(0, `lease taken over (${message})`);
          else if (performance.now() - this.#lastRenewAt >= (2 * this.#ttlMs) / 3)
            this.#setRevision(0, `cannot renew the lease (${message})`);
        }
      } else {
        try {
          const revision = await kv.create(KEY, value());
          this.#lastRenewAt = performance.now();
          if (signal.aborted) {
            this.#revision = revision; // close() releases it
            break;
          }
          this.#setRevision(revision, undefined);
        } catch {
          // held by another node (or NATS unreachable): try again later
        }
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.#ttlMs / 3);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  #setRevision(revision: number, lostReason: string | undefined): void {
    const was = this.isLeader;
    this.#revision = revision;
    if (was === this.isLeader) return;
    const { logger, nodeId, bucket } = this.#options;
    if (this.isLeader)
      logger.info({ node_id: nodeId, bucket, ttl_ms: this.#ttlMs }, 'became snapshot leader');
    else logger.info({ node_id: nodeId, bucket, reason: lostReason }, 'lost snapshot leadership');
    for (const l of this.#listeners) l(this.isLeader);
  }
}
