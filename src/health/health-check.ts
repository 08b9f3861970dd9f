import type Database from 'better-sqlite3';
import {
  CAPTURED_TABLES,
  changeLogTable,
  INTERNAL_TABLES,
  quoteIdent as q,
  CHANGE_TRIGGER_KINDS,
  triggerName,
} from '../cdc/names.ts';
import type { ShardLag } from '../metrics/lag-collector.ts';
import type { NodeStatus } from './node-status.ts';
import { openDatabase } from '../sqlite/open-database.ts';
import { packageVersion } from './package-version.ts';
import { safeText } from './safe-text.ts';

export const HEALTH_CHECKS = ['database', 'nats', 'capture', 'replication'] as const;
export type HealthCheckName = (typeof HEALTH_CHECKS)[number];

/** ok: serve traffic. degraded: working, but a shard is held (e.g. waiting for a schema). unhealthy: broken. */
export type HealthStatus = 'ok' | 'degraded' | 'unhealthy';

export interface FailedCheck {
  readonly check: HealthCheckName;
  /** degraded checks make the node `degraded`, failed ones `unhealthy`; both answer 503. */
  readonly severity: 'degraded' | 'failed';
  readonly reason: string;
}

export interface ShardHealth {
  readonly shard: number;
  readonly state: string;
  /** Why a shard is not running, when it says. */
  readonly reason?: string;
  readonly position: number;
  readonly stream_last_seq: number | null;
  readonly lag_messages: number | null;
  readonly lag_seconds: number | null;
  readonly last_apply_at: string | null;
  /** Messages dropped as already applied (by stream position or origin sequence) since start. */
  readonly duplicates_skipped: number;
  /** Messages moved to the dead letters since start. */
  readonly dead_letters: number;
}

/** The detailed body of the health endpoint (snake_case, like the metrics and the config). */
export interface HealthReport {
  readonly status: HealthStatus;
  readonly failed: readonly FailedCheck[];
  readonly node_id: number;
  readonly version: string;
  readonly uptime_seconds: number;
  readonly nats_connected: boolean;
  readonly tables: readonly string[];
  /** null when the database could not be read. */
  readonly pending_changes: number | null;
  readonly last_publish_at: string | null;
  readonly last_apply_at: string | null;
  readonly shards: readonly ShardHealth[];
}

export interface HealthCheckDeps {
  readonly nodeId: number;
  readonly dbPath: string;
  /** `publish = true`: captured tables must have their triggers. */
  readonly publish: boolean;
  /** The node's status; may throw when the database is unreadable. */
  readonly status: () => NodeStatus;
  /** The last lag measurement of a shard. */
  readonly lag: (shard: number) => ShardLag | undefined;
}

export interface HealthCheckOptions {
  /** How long a shard may fail, or lag without progress, or changes stay unpublished, before it is unhealthy. */
  readonly stallAfterMs: number;
  /** How often progress is sampled between probes. */
  readonly sampleIntervalMs: number;
}

interface ShardTrack {
  state: string;
  stateSince: number;
  position: number;
  progressAt: number;
  /** Since when the shard lags the stream (0 = caught up). */
  lagSince: number;
}

const DATABASE_BUSY_TIMEOUT_MS = 100;

/**
 * Decides whether this node is healthy: the database answers a read on a
 * connection of its own, NATS is connected, capture is installed (our tables,
 * and a change log and triggers for every captured table that still exists),
 * and replication is not stalled. "Stalled" needs time, so progress is sampled
 * every `sampleIntervalMs` between probes: a shard failing, or lagging with no
 * progress, for `stallAfterMs`; a shard behind the stream at once (only a
 * snapshot restore helps); changes pending with nothing published for
 * `stallAfterMs` while NATS is up. A shard waiting for this node's schema makes
 * the node degraded, with the reason.
 */
export class HealthCheck {
  readonly #deps: HealthCheckDeps;
  readonly #options: HealthCheckOptions;
  readonly #startedAt = Date.now();
  readonly #shards = new Map<number, ShardTrack>();
  #pendingSince = 0;
  #db: Database.Database | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(deps: HealthCheckDeps, options: HealthCheckOptions) {
    this.#deps = deps;
    this.#options = options;
  }

  open(): void {
    this.#sample(Date.now());
    this.#timer = setInterval(() => this.#sample(Date.now()), this.#options.sampleIntervalMs).unref();
  }

  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#db?.close();
    this.#db = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Tracks when each shard entered its state, last advanced, and since when changes are pending. */
  #sample(now: number, given?: NodeStatus): NodeStatus | undefined {
    let status: NodeStatus;
    try {
      status = given ?? this.#deps.status();
    } catch {
      return undefined;
    }
    for (const s of status.shards) {
      const lag = this.#deps.lag(s.shard);
      const behind = lag !== undefined && lag.streamLastSeq > s.position;
      let t = this.#shards.get(s.shard);
      if (t === undefined) {
        t = { state: s.state.type, stateSince: now, position: s.position, progressAt: now, lagSince: 0 };
        this.#shards.set(s.shard, t);
      }
      if (!behind) t.lagSince = 0;
      else if (t.lagSince === 0) t.lagSince = now;
      if (t.state !== s.state.type) {
        t.state = s.state.type;
        t.stateSince = now;
      }
      if (t.position !== s.position) {
        t.position = s.position;
        t.progressAt = now;
      }
    }
    if (status.pending === 0) this.#pendingSince = 0;
    else if (this.#pendingSince === 0) this.#pendingSince = now;
    return status;
  }

  /** Runs every check now. */
  evaluate(): HealthReport {
    const now = Date.now();
    const failed: FailedCheck[] = [];
    const fail = (check: HealthCheckName, reason: string, severity: FailedCheck['severity'] = 'failed') =>
      failed.push({ check, reason, severity });

    let status: NodeStatus | undefined;
    let statusError: unknown;
    try {
      status = this.#deps.status();
    } catch (err) {
      statusError = err;
    }
    try {
      for (const reason of this.#checkCapture()) fail('capture', reason);
    } catch (err) {
      fail('database', `cannot read the database: ${messageOf(err)}`);
    }
    if (status === undefined && !failed.some((f) => f.check === 'database'))
      fail('database', `cannot read the node's status: ${messageOf(statusError)}`);
    if (status !== undefined) {
      this.#sample(now, status);
      if (!status.natsConnected) fail('nats', 'not connected to NATS');
      if (status.waitingForSnapshot !== undefined) fail('replication', status.waitingForSnapshot, 'degraded');
      for (const reason of this.#checkShards(status, now)) fail('replication', reason.text, reason.severity);
      for (const problem of status.streamProblems ?? []) fail('replication', problem, 'degraded');
      const held = status.migrations?.held;
      if (held !== undefined)
        fail(
          'replication',
          `migration ${held.seq}${held.name === '' ? '' : ` (${held.name})`} failed on this node and holds the migration stream: ${held.error}${held.statement === undefined ? '' : ` in ${held.statement}`}`,
          'degraded',
        );
      if (status.verifyProblem !== undefined) fail('replication', status.verifyProblem, 'degraded');
      const { stallAfterMs } = this.#options;
      const quietSince = Math.max(status.lastPublishAt, this.#pendingSince);
      if (status.natsConnected && this.#pendingSince !== 0 && now - quietSince >= stallAfterMs) {
        fail(
          'replication',
          `publishing stalled: ${status.pending} changes pending, none published for ${seconds(now - quietSince)}`,
        );
      }
    }

    const unhealthy = failed.some((f) => f.severity === 'failed');
    const lastApplyAt = Math.max(0, ...(status?.shards.map((s) => s.lastApplyAt) ?? []));
    return {
      status: unhealthy ? 'unhealthy' : failed.length > 0 ? 'degraded' : 'ok',
      failed,
      node_id: this.#deps.nodeId,
      version: packageVersion(),
      uptime_seconds: Math.round((now - this.#startedAt) / 100) / 10,
      nats_connected: status?.natsConnected ?? false,
      tables: status?.tables ?? [],
      pending_changes: status?.pending ?? null,
      last_publish_at: isoOrNull(status?.lastPublishAt ?? 0),
      last_apply_at: isoOrNull(lastApplyAt),
      shards: (status?.shards ?? []).map((s) => {
        const lag = this.#deps.lag(s.shard);
        const reason = 'reason' in s.state ? safeText(s.state.reason) : undefined;
        return {
          shard: s.shard,
          state: s.state.type,
          ...(reason === undefined ? {} : { reason }),
          position: s.position,
          stream_last_seq: lag?.streamLastSeq ?? null,
          lag_messages: lag === undefined ? null : Math.max(0, lag.streamLastSeq - s.position),
          lag_seconds: lag?.lagSeconds ?? null,
          last_apply_at: isoOrNull(s.lastApplyAt),
          duplicates_skipped: s.duplicatesSkipped,
          dead_letters: s.deadLetters,
        };
      }),
    };
  }

  #checkShards(status: NodeStatus, now: number): { text: string; severity: FailedCheck['severity'] }[] {
    const { stallAfterMs } = this.#options;
    const out: { text: string; severity: FailedCheck['severity'] }[] = [];
    for (const s of status.shards) {
      const t = this.#shards.get(s.shard);
      const inState = t === undefined ? 0 : now - t.stateSince;
      const st = s.state;
      if (st.type === 'behind') {
        out.push({
          severity: 'failed',
          text: `shard ${s.shard} is behind the stream: it discarded messages after position ${st.position} (first kept ${st.firstSeq}); restore a snapshot`,
        });
      } else if (st.type === 'failing' && inState >= stallAfterMs) {
        out.push({
          severity: 'failed',
          text: `shard ${s.shard} has failed to apply for ${seconds(inState)}: ${safeText(st.reason)}`,
        });
      } else if (st.type === 'waiting-for-schema') {
        out.push({
          severity: 'degraded',
          text: `shard ${s.shard} waits for this node's schema since ${seconds(now - st.since)} (message ${st.seq}): ${safeText(st.reason)}`,
        });
      } else {
        const lag = this.#deps.lag(s.shard);
        const behind = lag === undefined ? 0 : lag.streamLastSeq - s.position;
        const quiet = t === undefined || t.lagSince === 0 ? 0 : now - Math.max(t.progressAt, t.lagSince);
        if (behind > 0 && quiet >= stallAfterMs && status.natsConnected) {
          out.push({
            severity: 'failed',
            text: `shard ${s.shard} stalled: ${behind} messages behind, no progress for ${seconds(quiet)}`,
          });
        }
      }
    }
    return out;
  }

  /** Reasons capture is not installed; throws when the database cannot be read at all. */
  #checkCapture(): string[] {
    this.#db ??= openDatabase(this.#deps.dbPath, { busyTimeoutMs: DATABASE_BUSY_TIMEOUT_MS, readonly: true });
    const rows = this.#db
      .prepare("SELECT type, name FROM sqlite_schema WHERE type IN ('table', 'trigger')")
      .all() as { type: string; name: string }[];
    const tables = new Set(rows.filter((r) => r.type === 'table').map((r) => r.name));
    const triggers = new Set(rows.filter((r) => r.type === 'trigger').map((r) => r.name));
    const missing = INTERNAL_TABLES.filter((t) => !tables.has(t));
    if (missing.length > 0) return [`capture is not installed: missing ${missing.join(', ')}`];
    const reasons: string[] = [];
    const captured = this.#db
      .prepare(`SELECT name FROM ${q(CAPTURED_TABLES)}`)
      .pluck()
      .all() as string[];
    for (const name of captured) {
      // A table just dropped loses its triggers before the node's schema check unregisters it.
      if (!tables.has(name)) continue;
      if (!tables.has(changeLogTable(name))) reasons.push(`table ${JSON.stringify(name)} has no change log`);
      if (!this.#deps.publish) continue;
      const lost = CHANGE_TRIGGER_KINDS.filter((k) => !triggers.has(triggerName(name, k)));
      if (lost.length > 0) reasons.push(`table ${JSON.stringify(name)} lacks its ${lost.join(', ')} trigger`);
    }
    return reasons;
  }
}

function messageOf(err: unknown): string {
  return String((err as Error | undefined)?.message ?? err);
}

function isoOrNull(ms: number): string | null {
  return ms > 0 ? new Date(ms).toISOString() : null;
}

function seconds(ms: number): string {
  return `${Math.round(ms / 1000)} s`;
}
