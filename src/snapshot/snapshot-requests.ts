/**
 * Asking the cluster for a fresh snapshot over NATS request/reply: a node
 * that must restore (invariant 8) but finds no stored snapshot reaching the
 * streams' first kept messages asks every node; each answers what it can do.
 * Only the snapshot leader takes the snapshot, so two nodes never store one at
 * the same time; an up-to-date node that is not leader answers so the asker
 * knows help exists (a leader is elected within the lease TTL).
 */
import { createInbox, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import type { Logger } from '../logger.ts';
import type { StreamRange } from './restore-plan.ts';
import { errorMessage } from '../error-message.ts';
import { SnapshotError } from './snapshot-error.ts';
import type { RestoreDecision } from './snapshot-restorer.ts';

/** Subject of snapshot requests: `<stream_prefix>-snapshot-request`. */
export function snapshotRequestSubject(streamPrefix: string): string {
  return `${streamPrefix}-snapshot-request`;
}

export interface SnapshotRequest {
  readonly nodeId: number;
  /** The first kept message of every shard stream, as the asker saw them ("1", "2", …). */
  readonly firstSeqs: Readonly<Record<string, number>>;
}

/**
 * What a node answers:
 * - `taking`: the leader, up to date: it takes a snapshot now (or one is under way);
 * - `up-to-date`: could serve, but is not the leader;
 * - `cannot`: can never serve this request; `reason` says why (behind the streams
 *   too, or not replicating, so its positions say nothing).
 */
export interface SnapshotRequestReply {
  readonly nodeId: number;
  readonly answer: 'taking' | 'up-to-date' | 'cannot';
  readonly reason?: string;
}

export interface SnapshotRequestResponderOptions {
  readonly nc: NatsConnection;
  readonly streamPrefix: string;
  readonly nodeId: number;
  /**
   * This node's applied position per shard, brought up to date first (a
   * position reached by skipping own batches is stored lazily); undefined
   * when it does not replicate.
   */
  readonly positions: () => Promise<ReadonlyMap<number, number> | undefined>;
  readonly isLeader: () => boolean;
  /** Makes the leader take a snapshot at its next check (see `SnapshotScheduler.requestSnapshot`). */
  readonly takeSnapshot: (reason: string) => void;
  readonly logger: Logger;
}

/** Answers snapshot requests of other nodes while open. */
export class SnapshotRequestResponder {
  readonly #o: SnapshotRequestResponderOptions;
  #sub: Subscription | undefined;
  #loop: Promise<void> | undefined;

  constructor(options: SnapshotRequestResponderOptions) {
    this.#o = options;
  }

  open(): void {
    if (this.#sub !== undefined) return;
    const sub = this.#o.nc.subscribe(snapshotRequestSubject(this.#o.streamPrefix));
    this.#sub = sub;
    this.#loop = this.#serve(sub).catch((err: unknown) => {
      // A permission error ends the subscription: this node just cannot help others join.
      this.#o.logger.warn(
        { subject: snapshotRequestSubject(this.#o.streamPrefix), err: errorMessage(err) },
        'cannot answer snapshot requests (the NATS user needs publish and subscribe on this subject)',
      );
    });
  }

  async #serve(sub: Subscription): Promise<void> {
    for await (const msg of sub) {
      let request: SnapshotRequest;
      try {
        request = msg.json<SnapshotRequest>();
      } catch {
        continue; // not ours to answer
      }
      if (request.nodeId === this.#o.nodeId) continue;
      let reply: SnapshotRequestReply;
      try {
        reply = await this.answer(request);
      } catch (err) {
        this.#o.logger.warn(
          { from_node: request.nodeId, err: errorMessage(err) },
          'cannot answer a snapshot request',
        );
        continue; // the asker asks again
      }
      if (reply.answer === 'taking')
        this.#o.takeSnapshot(`node ${request.nodeId} asked for a fresh snapshot`);
      this.#o.logger.info(
        {
          from_node: request.nodeId,
          answer: reply.answer,
          ...(reply.reason ? { reason: reply.reason } : {}),
        },
        'answered a snapshot request',
      );
      msg.respond(JSON.stringify(reply));
    }
  }

  /** What this node can do for `request` now. */
  async answer(request: SnapshotRequest): Promise<SnapshotRequestReply> {
    const { nodeId } = this.#o;
    const positions = await this.#o.positions();
    if (positions === undefined)
      return { nodeId, answer: 'cannot', reason: 'it does not replicate (replicate = false)' };
    for (const [shard, firstSeq] of Object.entries(request.firstSeqs)) {
      const position = positions.get(Number(shard)) ?? 0;
      if (position + 1 < firstSeq)
        return {
          nodeId,
          answer: 'cannot',
          reason: `it is behind the streams too: shard ${shard} at ${position}, stream starts at ${firstSeq}`,
        };
    }
    return { nodeId, answer: this.#o.isLeader() ? 'taking' : 'up-to-date' };
  }

  async close(): Promise<void> {
    this.#sub?.unsubscribe();
    this.#sub = undefined;
    await this.#loop;
  }
}

/**
 * Sends `request` to every node and collects the replies that arrive within
 * `collectMs` (none when no node listens).
 */
export async function askForSnapshot(
  nc: NatsConnection,
  streamPrefix: string,
  request: SnapshotRequest,
  collectMs: number,
): Promise<SnapshotRequestReply[]> {
  const replySubject = createInbox();
  const sub = nc.subscribe(replySubject);
  const replies: SnapshotRequestReply[] = [];
  const timer = setTimeout(() => sub.unsubscribe(), collectMs);
  try {
    nc.publish(snapshotRequestSubject(streamPrefix), JSON.stringify(request), { reply: replySubject });
    for await (const msg of sub) {
      try {
        replies.push(msg.json<SnapshotRequestReply>());
      } catch {
        // not a reply of ours
      }
    }
  } finally {
    clearTimeout(timer);
    sub.unsubscribe();
  }
  return replies;
}

export interface FreshSnapshotWaitOptions {
  readonly nc: NatsConnection;
  readonly streamPrefix: string;
  readonly nodeId: number;
  /** Why the stored snapshots do not serve (the `ERR_SNAPSHOT_TOO_OLD` or `ERR_SNAPSHOT_MISSING` of the plan). */
  readonly refusal: SnapshotError;
  /** Plans the restore again: a decision once a stored snapshot serves; rejects as `refusal` did while none does. */
  readonly check: (signal: AbortSignal) => Promise<RestoreDecision | undefined>;
  readonly streamRanges: (signal: AbortSignal) => Promise<readonly StreamRange[]>;
  /** Called with what the node waits for (degraded health, the metric), then with undefined. */
  readonly onWaiting: (reason: string | undefined) => void;
  readonly logger: Logger;
  readonly signal: AbortSignal;
  /** Pause between two requests. Default 5 s. */
  readonly askEveryMs?: number;
  /** How long replies are collected. Default 1 s. */
  readonly collectMs?: number;
  /** Rounds in a row in which every answering node said it cannot, before giving up. Default 3. */
  readonly giveUpAfterRounds?: number;
}

/**
 * Waits until the cluster stored a snapshot this node can restore, asking for
 * one every `askEveryMs` and logging each round's answers. Resolves with the
 * new plan. Rejects (with `refusal`'s code, saying why) only when no node can
 * ever provide one: for `giveUpAfterRounds` rounds in a row nodes answered and
 * every one of them could not. No answer at all keeps waiting: an up-to-date
 * node may be starting.
 */
export async function waitForFreshSnapshot(
  o: FreshSnapshotWaitOptions,
): Promise<RestoreDecision | undefined> {
  const askEveryMs = o.askEveryMs ?? 5000;
  const startedAt = performance.now();
  let cannotRounds = 0;
  let lastRefusal = o.refusal;
  const waiting = `waiting for a fresh snapshot to restore: ${lastRefusal.message}`;
  o.onWaiting(waiting);
  try {
    for (;;) {
      o.signal.throwIfAborted();
      const ranges = await o.streamRanges(o.signal);
      const firstSeqs = Object.fromEntries(ranges.map((r) => [String(r.shard), r.firstSeq]));
      const replies = await askForSnapshot(
        o.nc,
        o.streamPrefix,
        { nodeId: o.nodeId, firstSeqs },
        o.collectMs ?? 1000,
      );
      const by = (answer: SnapshotRequestReply['answer']) =>
        replies.filter((r) => r.answer === answer).map((r) => r.nodeId);
      const waitedSeconds = Math.round((performance.now() - startedAt) / 1000);
      const progress = { waited_s: waitedSeconds, stream_first_seqs: firstSeqs };
      if (by('taking').length > 0) {
        cannotRounds = 0;
        o.logger.info(
          { ...progress, nodes: by('taking') },
          'waiting for a fresh snapshot: the snapshot leader is taking one',
        );
      } else if (by('up-to-date').length > 0) {
        cannotRounds = 0;
        o.logger.info(
          { ...progress, nodes: by('up-to-date') },
          'waiting for a fresh snapshot: up-to-date nodes answered, waiting for a snapshot leader',
        );
      } else if (replies.length > 0) {
        cannotRounds++;
        const reasons = replies.map((r) => `node ${r.nodeId}: ${r.reason ?? 'cannot'}`).join('; ');
        o.logger.warn(
          { ...progress, reasons },
          'waiting for a fresh snapshot: no node that answered can provide one',
        );
        if (cannotRounds >= (o.giveUpAfterRounds ?? 3)) {
          throw new SnapshotError(
            lastRefusal.code,
            `${lastRefusal.message}; no node can provide a snapshot that reaches them: every node that answered cannot (${reasons})`,
            {
              cause: lastRefusal,
              hint: 'start a node that applied every message the streams still hold (its snapshot reaches them); the messages the streams discarded exist nowhere else',
            },
          );
        }
      } else {
        cannotRounds = 0;
        o.logger.warn(
          progress,
          'waiting for a fresh snapshot: no node answered; waiting for an up-to-date node to start',
        );
      }
      await sleep(askEveryMs, o.signal);
      try {
        return await o.check(o.signal);
      } catch (err) {
        if (!isRefusal(err)) throw err;
        lastRefusal = err;
      }
    }
  } finally {
    o.onWaiting(undefined);
  }
}

/** The plan's "no stored snapshot serves": the cluster may still store one. */
export function isRefusal(err: unknown): err is SnapshotError {
  return (
    err instanceof SnapshotError &&
    (err.code === 'ERR_SNAPSHOT_TOO_OLD' || err.code === 'ERR_SNAPSHOT_MISSING')
  );
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason as Error);
    };
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
