/**
 * `[verify] interval`: the daemon runs verify now and then. Only the node with
 * the lowest id among those answering runs it (one comparison per cluster,
 * not one per node). Keys still differing after the in-flight rounds are
 * divergence: counted in a metric, logged, and the node's health is degraded
 * until a later run finds none.
 */
import type { JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../logger.ts';
import { PeriodicTask } from '../periodic-task.ts';
import { ClusterVerify, type VerifyReport } from './cluster-verify.ts';

export interface LastVerify {
  /** When it finished, ms since the epoch. */
  readonly at: number;
  readonly nodes: number;
  readonly rows: number;
  readonly diverged: number;
  readonly inFlight: number;
  /** Set when the run failed (a node did not answer in time...). */
  readonly error?: string;
}

export class PeriodicVerify {
  readonly #task: PeriodicTask;
  #last: LastVerify | undefined;

  constructor(
    deps: {
      nc: NatsConnection;
      jsm: JetStreamManager;
      nodeId: number;
      streamPrefix: string;
      shards: number;
      logger: Logger;
      /** Differing keys found by the last run of this node (the metric). */
      setDiffering: (n: number) => void;
    },
    intervalMs: number,
  ) {
    const verify = new ClusterVerify(deps.nc, deps.jsm, {
      streamPrefix: deps.streamPrefix,
      shards: deps.shards,
    });
    this.#task = new PeriodicTask(async () => {
      try {
        const nodes = (await verify.discover()).map((h) => h.nodeId);
        if (nodes.length < 2 || Math.min(...nodes) !== deps.nodeId) return;
        const r: VerifyReport = await verify.verify(nodes);
        this.#last = {
          at: Date.now(),
          nodes: nodes.length,
          rows: r.rows,
          diverged: r.diverged,
          inFlight: r.inFlight,
        };
        deps.setDiffering(r.diverged);
        if (r.diverged > 0) {
          const keys = r.tables.flatMap((t) =>
            t.differences.filter((d) => d.status === 'diverged').map((d) => `${t.table}:${d.pk}`),
          );
          deps.logger.warn(
            { diverged: r.diverged, keys: keys.slice(0, 20), nodes },
            'verify: nodes hold different replicated state; run harmonylite -verify -repair',
          );
        } else {
          deps.logger.info(
            { nodes: nodes.length, rows: r.rows, ms: Math.round(r.ms), bytes: r.bytes },
            'verify: all nodes agree',
          );
        }
      } catch (err) {
        const error = String((err as Error).message ?? err);
        this.#last = {
          ...(this.#last ?? { nodes: 0, rows: 0, diverged: 0, inFlight: 0 }),
          at: Date.now(),
          error,
        };
        deps.logger.warn({ err: error }, 'verify run failed; retried at the next interval');
      }
    }, intervalMs);
  }

  get last(): LastVerify | undefined {
    return this.#last;
  }

  /** Why health is degraded, while the last run found divergence. */
  get problem(): string | undefined {
    const l = this.#last;
    return l !== undefined && l.diverged > 0 && l.error === undefined
      ? `verify found ${l.diverged} key(s) differing between nodes (harmonylite -verify -repair)`
      : undefined;
  }

  open(): void {
    this.#task.open();
  }

  close(): Promise<void> {
    return this.#task.close();
  }
}
