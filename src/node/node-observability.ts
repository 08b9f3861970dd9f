import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import type { Config } from '../config/config.ts';
import { HealthCheck } from '../health/health-check.ts';
import { HealthServer } from '../health/health-server.ts';
import type { RequestHandler } from '../metrics/http-endpoint.ts';
import { packageVersion } from '../health/package-version.ts';
import type { Logger } from '../logger.ts';
import type { NodeStatus } from '../health/node-status.ts';
import { NodeStatusReporter } from './node-status-reporter.ts';
import type { WriterQueue } from '../sqlite/writer-queue.ts';
import { countBusyWrites } from '../metrics/busy-writes.ts';
import { LagCollector, type AppliedShard } from '../metrics/lag-collector.ts';
import { MetricsServer } from '../metrics/metrics-server.ts';
import type { Metrics } from '../metrics/metrics.ts';

export interface NodeObservabilityDeps {
  readonly config: Config;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly nodeId: number;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly writer: WriterQueue;
  /** HarmonyLiteNode.status(): may throw when the database is unreadable. */
  readonly status: () => NodeStatus;
  /** The node's shard consumers. */
  readonly shards: () => readonly AppliedShard[];
  /** More endpoints on the health listener, by path. */
  readonly routes?: ReadonlyMap<string, RequestHandler>;
}

/** Intervals and thresholds; the defaults suit production, tests may shorten them. */
export interface NodeObservabilityOptions {
  readonly lagIntervalMs: number;
  readonly statusIntervalMs: number;
  readonly statusMaxAgeMs: number;
  readonly stallAfterMs: number;
  readonly healthSampleMs: number;
}

export const OBSERVABILITY_DEFAULTS: NodeObservabilityOptions = {
  lagIntervalMs: 2000,
  statusIntervalMs: 5000,
  statusMaxAgeMs: 60_000,
  stallAfterMs: 30_000,
  healthSampleMs: 1000,
};

/** How long one NodeStatus is reused by the collectors (it counts pending changes on the database). */
const STATUS_REUSE_MS = 250;

/**
 * What a running node shows its operators, opened last and closed first by
 * HarmonyLiteNode: the lag collector and the status reporter always; the
 * `/metrics` endpoint (with process metrics) when `[prometheus] enable`; the
 * health endpoint when `[health_check] enable`. It also counts busy writes of
 * the node's writer queue.
 */
export class NodeObservability {
  readonly #deps: NodeObservabilityDeps;
  readonly lag: LagCollector;
  readonly reporter: NodeStatusReporter;
  readonly health: HealthCheck;
  readonly metricsServer: MetricsServer | undefined;
  readonly healthServer: HealthServer | undefined;
  #status: { at: number; value: NodeStatus } | undefined;

  constructor(deps: NodeObservabilityDeps, options: Partial<NodeObservabilityOptions> = {}) {
    this.#deps = deps;
    const o = { ...OBSERVABILITY_DEFAULTS, ...options };
    const { config, logger, metrics } = deps;
    const status = () => this.#cachedStatus();
    this.lag = new LagCollector(
      {
        jsm: deps.jsm,
        shards: deps.shards,
        pending: () => status().pending,
        metrics,
        logger: logger.child({ component: 'lag-collector' }),
      },
      { intervalMs: o.lagIntervalMs },
    );
    this.reporter = new NodeStatusReporter(
      { js: deps.js, status, logger: logger.child({ component: 'status-reporter' }) },
      {
        streamPrefix: config.nats.stream_prefix,
        version: packageVersion(),
        publish: config.publish,
        replicate: config.replicate,
        intervalMs: o.statusIntervalMs,
        maxAgeMs: o.statusMaxAgeMs,
        replicas: config.replication_log.replicas,
      },
    );
    this.health = new HealthCheck(
      {
        nodeId: deps.nodeId,
        dbPath: config.db_path,
        publish: config.publish,
        status,
        lag: (shard) => this.lag.shard(shard),
      },
      { stallAfterMs: o.stallAfterMs, sampleIntervalMs: o.healthSampleMs },
    );
    this.metricsServer = config.prometheus.enable
      ? new MetricsServer({ bind: config.prometheus.bind, registry: metrics.registry, logger })
      : undefined;
    this.healthServer = config.health_check.enable
      ? new HealthServer({
          bind: config.health_check.bind,
          path: config.health_check.path,
          detailed: config.health_check.detailed,
          // A probe always sees the status of now (NATS just dropped, say), not a reused one.
          evaluate: () => {
            this.#status = undefined;
            return this.health.evaluate();
          },
          logger,
          ...(deps.routes === undefined ? {} : { routes: deps.routes }),
        })
      : undefined;
  }

  #cachedStatus(): NodeStatus {
    const now = Date.now();
    if (this.#status === undefined || now - this.#status.at > STATUS_REUSE_MS)
      this.#status = { at: now, value: this.#deps.status() };
    return this.#status.value;
  }

  /** Starts everything; a port already taken rejects (after closing what was started). */
  async open(): Promise<void> {
    this.#deps.writer.onError = countBusyWrites(this.#deps.metrics);
    if (this.metricsServer !== undefined) this.#deps.metrics.enableProcessMetrics();
    this.lag.open();
    this.reporter.open();
    this.health.open();
    try {
      await this.metricsServer?.open();
      await this.healthServer?.open();
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** Stops everything; idempotent. */
  async close(): Promise<void> {
    await Promise.all([this.metricsServer?.close(), this.healthServer?.close()]);
    this.health.close();
    await Promise.all([this.lag.close(), this.reporter.close()]);
    this.#deps.writer.onError = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
