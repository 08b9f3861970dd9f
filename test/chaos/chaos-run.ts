/**
 * The chaos suite: three HarmonyLite CLI nodes over a 3-server JetStream cluster
 * (R3 streams), concurrent random writes on every node (one writer is the stock
 * sqlite3 shell), and faults at random times from a seeded schedule: kill -9 of
 * a node or a server, SIGSTOP/SIGCONT of either, a network partition of a node
 * (TCP proxies cut), a snapshot restore under load (a stopped node whose history
 * the streams discarded), a full snapshot disk (store or temp dir on a filled
 * tmpfs), and a hostile publisher (forged and oversized messages). Every enabled kind of fault runs at least once per run.
 * After healing and quiescence it checks:
 *  - every user table is identical on every node;
 *  - no lost write: every write a writer committed is in the stream history,
 *    and every node's tables equal its fold in stream order (last writer wins);
 *  - no node crashed, no dead letters but the hostile publisher's (each of those
 *    on every node), and every fault's own checks passed.
 * The fault schedule is reproducible from the seed; failures carry the seed,
 * the schedule, and where the node logs were saved.
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { waitFor } from '../helpers/wait-for.ts';
import { checkAgainstHistory, waitForIdenticalTables } from './chaos-checker.ts';
import { ChaosCluster, STREAM_PREFIX } from './chaos-cluster.ts';
import { ChaosWriters } from './chaos-writers.ts';
import { emptyFaultStats, sleep, type FaultContext, type FaultStats } from './fault-context.ts';
import { FAULTS, FaultSchedule, type FaultKind } from './fault-schedule.ts';
import { killNode, killServer, partitionNode, pauseNode, pauseServer } from './process-faults.ts';
import { hostilePublisher } from './hostile-faults.ts';
import { fullSnapshotDisk, snapshotRestore } from './snapshot-faults.ts';
import { StreamHistory } from './stream-history.ts';

export { CHAOS_SCHEMA } from './chaos-cluster.ts';
export { FAULTS, type FaultKind } from './fault-schedule.ts';

export interface ChaosOptions {
  readonly seed: number;
  /** How long faults are injected; the run goes on until every enabled kind ran once. */
  readonly durationMs: number;
  readonly shards?: number;
  readonly faults?: readonly FaultKind[];
  /** Mean time between faults, ms. */
  readonly faultEveryMs?: number;
  /** `[snapshot] interval` of the nodes, ms. Default 2000. */
  readonly snapshotIntervalMs?: number;
  readonly log?: (line: string) => void;
}

export interface ChaosReport {
  readonly seed: number;
  /** The fault schedule as it ran, one line per step, with times since the start. */
  readonly faults: string[];
  readonly faultCounts: Partial<Record<FaultKind, number>>;
  /** Fault kinds that could not run here, with the reason. */
  readonly skipped: string[];
  readonly writes: number;
  readonly streamChanges: number;
  readonly divergences: string[];
  readonly lostWrites: string[];
  readonly crashes: string[];
  readonly deadLetters: number;
  /** Failed checks of the faults themselves and gaps in the stream history. */
  readonly failedChecks: string[];
  readonly snapshots: FaultStats;
  /** Writes labelled by faults (pending at a stop, made while down): how many, how many lost. */
  readonly labelledWrites: Record<string, { readonly writes: number; readonly lost: number }>;
  readonly durationMs: number;
  /** Where the node logs were saved, when something failed. */
  readonly logs?: string;
}

/** A run that could not finish; the message carries the seed, the schedule so far and the logs' path. */
export class ChaosRunError extends Error {
  override readonly name = 'ChaosRunError';
  readonly code = 'ERR_CHAOS_RUN';
  readonly seed: number;
  readonly faults: readonly string[];

  constructor(seed: number, faults: readonly string[], logs: string | undefined, cause: unknown) {
    super(
      `chaos run with seed ${seed} failed: ${cause instanceof Error ? cause.message : String(cause)}\n` +
        `fault schedule:\n${faults.join('\n')}\n${logs === undefined ? '' : `node logs: ${logs}\n`}`,
      { cause },
    );
    this.seed = seed;
    this.faults = faults;
  }
}

/** What each kind of fault does; targets and outages come from the schedule. */
const RUN_FAULT: Record<FaultKind, (ctx: FaultContext, outageMs: number) => Promise<void>> = {
  'kill-node': (ctx, ms) => killNode(ctx, ctx.schedule.pick(ctx.cluster.nodes), ms),
  'pause-node': (ctx, ms) => pauseNode(ctx, ctx.schedule.pick(ctx.cluster.nodes), ms),
  'partition-node': (ctx, ms) => partitionNode(ctx, ctx.schedule.pick(ctx.cluster.nodes), ms),
  'snapshot-restore': (ctx, ms) => snapshotRestore(ctx, ctx.schedule.pick(ctx.cluster.nodes), ms),
  'kill-server': (ctx, ms) => killServer(ctx, Math.floor(ctx.schedule.rand() * 3), ms),
  'pause-server': (ctx, ms) => pauseServer(ctx, Math.floor(ctx.schedule.rand() * 3), ms),
  'full-snapshot-disk': (ctx) => fullSnapshotDisk(ctx),
  'hostile-publisher': (ctx) => hostilePublisher(ctx),
};

export function isFailed(r: ChaosReport): boolean {
  return (
    r.divergences.length + r.lostWrites.length + r.crashes.length + r.deadLetters + r.failedChecks.length > 0
  );
}

export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const log = options.log ?? (() => undefined);
  const shards = options.shards ?? 2;
  const started = Date.now();
  const faults: string[] = [];
  const failedChecks: string[] = [];
  const skipped: string[] = [];
  const note = (s: string) => {
    const line = `+${((Date.now() - started) / 1000).toFixed(1)}s ${s}`;
    faults.push(line);
    log(line);
  };
  const cluster = new ChaosCluster({
    shards,
    snapshotIntervalMs: options.snapshotIntervalMs ?? 2000,
    snapshotDiskBytes: 16 * 1024 * 1024,
  });
  const writers = new ChaosWriters(options.seed);
  let nc: NatsConnection | undefined;
  try {
    await cluster.open();
    let kinds = options.faults ?? FAULTS;
    if (kinds.includes('full-snapshot-disk') && !cluster.disk.fillable) {
      skipped.push(`full-snapshot-disk: ${cluster.disk.unavailableReason}`);
      log(`skipping the full-snapshot-disk fault: ${cluster.disk.unavailableReason}`);
      kinds = kinds.filter((k) => k !== 'full-snapshot-disk');
    }
    log(`seed ${options.seed}: 3 nodes up, shards ${shards}, R3, faults ${kinds.join(', ')}`);
    nc = await connect({ servers: cluster.nats.urls });
    const schedule = new FaultSchedule(options.seed, kinds);
    const ctx: FaultContext = {
      cluster,
      schedule,
      history: new StreamHistory(STREAM_PREFIX, shards),
      jsm: await jetstreamManager(nc),
      writers,
      shards,
      note,
      fail: (check) => {
        failedChecks.push(check);
        log(`FAILED CHECK ${check}`);
      },
      stats: emptyFaultStats(),
    };
    writers.start(cluster.nodes);

    const faultCounts: Partial<Record<FaultKind, number>> = {};
    const faultEvery = options.faultEveryMs ?? 4000;
    const deadline = Date.now() + options.durationMs;
    const more = () => Date.now() < deadline - 2000 || schedule.uncovered > 0;
    while (more()) {
      await sleep(faultEvery / 2 + schedule.rand() * faultEvery);
      if (!more()) break;
      const kind = schedule.next();
      faultCounts[kind] = (faultCounts[kind] ?? 0) + 1;
      await RUN_FAULT[kind](ctx, schedule.durationMs(500, 3000));
    }
    await writers.stop();
    log(`writes stopped: ${writers.writes.length} writes; waiting for quiescence`);

    // Quiescence: nothing pending anywhere, then identical tables.
    await waitFor(
      'every node to publish all its changes',
      () => cluster.nodes.every((n) => cluster.unpublished(n) === 0),
      { timeoutMs: 120_000, intervalMs: 250, seen: () => cluster.nodes.map((n) => cluster.unpublished(n)) },
    );
    const divergences = await waitForIdenticalTables(cluster.nodes, 120_000);
    const history = await ctx.history.read(ctx.jsm);
    failedChecks.push(...history.gaps.map((g) => `stream history incomplete: ${g}`));
    const verdict = checkAgainstHistory(cluster.nodes, writers.writes, history, ctx.stats.hostileMessages);
    failedChecks.push(...verdict.missingDeadLetters);
    const report: ChaosReport = {
      seed: options.seed,
      faults,
      faultCounts,
      skipped,
      writes: writers.writes.length,
      streamChanges: verdict.streamChanges,
      divergences: [...divergences, ...verdict.divergences],
      lostWrites: verdict.lostWrites,
      crashes: cluster.crashes,
      deadLetters: verdict.deadLetters,
      failedChecks,
      snapshots: ctx.stats,
      labelledWrites: verdict.labelledWrites,
      durationMs: Date.now() - started,
    };
    return isFailed(report) ? { ...report, logs: cluster.saveLogs(options.seed) } : report;
  } catch (err) {
    let logs: string | undefined;
    try {
      logs = cluster.saveLogs(options.seed);
    } catch {
      // Nothing to save: the cluster did not get that far.
    }
    throw new ChaosRunError(
      options.seed,
      [...faults, ...failedChecks.map((c) => `FAILED CHECK ${c}`)],
      logs,
      err,
    );
  } finally {
    await writers.stop().catch(() => undefined);
    await nc?.close();
    await cluster.close();
  }
}
