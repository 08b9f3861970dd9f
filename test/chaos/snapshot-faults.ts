/**
 * Faults of the snapshot machinery (invariant 8):
 * - `snapshotRestore`: a node is stopped (kill -9 or SIGTERM) while its
 *   application and the other nodes keep writing; the streams then discard
 *   all their history (see `discardHistory`) once a snapshot holds it, so the
 *   node must restore that snapshot when it restarts, under load, and catch
 *   up. Its writes that were not published when it stopped, and those made
 *   while it was down or restarting, are labelled: the checker must find every
 *   one in the streams (the node publishes its own pending changes first).
 * - `fullSnapshotDisk`: the snapshot store or temp dir fills up; a save must
 *   fail with a clear logged error while the node keeps replicating, and once
 *   the filler is removed a later save must succeed.
 */
import Database from 'better-sqlite3';
import { changeLogTable, GLOBAL_LOG, quoteIdent as q, valueColumn } from '../../src/cdc/names.ts';
import { shardNumbers, streamName } from '../../src/nats/naming.ts';
import { manifestPosition } from '../../src/snapshot/snapshot-manifest.ts';
import { spawnCli } from '../helpers/node-harness.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { storedSnapshots } from '../snapshot/snapshot-test-kit.ts';
import {
  CHAOS_TABLES,
  STREAM_PREFIX,
  type ChaosCluster,
  type ChaosNode,
  type LogRecord,
} from './chaos-cluster.ts';
import { sleep, type FaultContext } from './fault-context.ts';
import type { SnapshotDiskArea } from './snapshot-disk.ts';

const NO_SPACE_CODES = new Set(['ERR_SNAPSHOT_NO_SPACE', 'ERR_SNAPSHOT_STORE_NO_SPACE']);

export async function snapshotRestore(ctx: FaultContext, n: ChaosNode, downMs: number): Promise<void> {
  const { cluster, note } = ctx;
  const signal = ctx.schedule.pick(['SIGKILL', 'SIGTERM'] as const);
  const id = `restore #${++ctx.stats.restoreFaults} of node ${n.id}`;
  note(
    `${signal === 'SIGKILL' ? 'kill -9' : 'SIGTERM'} node ${n.id} for ${downMs} ms, discard the history it misses, restart it: snapshot restore under load`,
  );
  n.writeLabel = `${id}: written while down`;
  // A leader killed -9 keeps its lease until it expires (15 s): no scheduled snapshot comes before that.
  const leaseHeld = signal === 'SIGKILL' && isSnapshotLeader(cluster, n);
  const code = await cluster.stopNode(n, signal);
  if (signal === 'SIGTERM' && code !== 0)
    ctx.fail(`${id}: SIGTERM stopped node ${n.id} with exit code ${code}`);
  const pending = pendingTokens(n.dbPath);
  ctx.stats.pendingAtStop += ctx.writers.label(pending, `${id}: pending when stopped`);
  const positions = cluster.positions(n);
  await sleep(downMs);
  const discarded = await discardHistory(ctx, id, n, positions, leaseHeld);

  const unpublished = cluster.unpublished(n);
  n.writeLabel = `${id}: written while it restarts`;
  const restartAt = Date.now();
  try {
    await cluster.startNode(n);
  } finally {
    n.writeLabel = undefined;
  }
  const incarnation = n.processes.length;
  const records = cluster.logRecords(n, restartAt).filter((r) => r.process === incarnation);
  const restored = records.find((r) => r.msg === 'Snapshot restored');
  if (restored !== undefined) {
    ctx.stats.restores++;
    const waited = records.find((r) => r.msg === 'publishing local changes before the restore');
    const carried = records.find(
      (r) => r.msg === 'local changes not published yet are kept across the restore',
    );
    note(
      `node ${n.id} restarted and restored ${String(restored.name)} (${JSON.stringify(restored.positions)}); ` +
        `${unpublished} local changes were pending at restart (${pending.size} upserts from before the stop), ` +
        `${waited === undefined ? 'published before the restore began' : `${String(waited.pending)} still to publish when the restore waited for them`}` +
        `${carried === undefined ? '' : `, ${String(carried.changes)} made meanwhile carried across the swap`}`,
    );
  } else if (discarded) {
    ctx.fail(
      `${id}: node ${n.id} started without restoring a snapshot although the streams discarded its history`,
    );
  }
  await waitCaughtUp(ctx, n, id);
}

/**
 * Makes the streams discard every message published so far, as `max_entries`
 * or `max_age` do during a long outage, once a snapshot reaches their end and
 * every running node applied it; the stopped node is then behind the streams.
 * Everything, not a part: nats-server before 2.9.18 (this machine has 2.9.10)
 * replays a purge up to a sequence as a purge up to the stream's last sequence
 * of that moment when a server recovers (nats-io/nats-server#4196, fixed by
 * #4212), which would later drop messages the running nodes have not applied.
 * A purge of everything reads the same replayed. So the running nodes'
 * writers pause for that moment, to let their nodes go quiet; the stopped
 * node's application keeps writing. Returns whether history was discarded.
 */
async function discardHistory(
  ctx: FaultContext,
  id: string,
  n: ChaosNode,
  stoppedAt: ReadonlyMap<number, number>,
  leaseHeld: boolean,
): Promise<boolean> {
  const { cluster } = ctx;
  const running = cluster.running();
  const pausedAt = Date.now();
  await ctx.writers.pause(running);
  try {
    let seen: unknown;
    const last = await waitFor(
      'the running nodes to publish and apply everything',
      async () => {
        const last = await lastSeqs(ctx);
        const at = running.map((r) => ({
          unpublished: cluster.unpublished(r),
          positions: cluster.positions(r),
        }));
        seen = {
          last: Object.fromEntries(last),
          at: at.map((a) => ({ ...a, positions: Object.fromEntries(a.positions) })),
        };
        const quiet = at.every(
          (a) =>
            a.unpublished === 0 && [...last].every(([shard, seq]) => (a.positions.get(shard) ?? 0) >= seq),
        );
        return quiet ? last : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 50, seen: () => seen },
    ).catch((err: unknown) => {
      ctx.fail(`${id}: ${(err as Error).message}`);
      return undefined;
    });
    if (last === undefined) return false;
    if ([...last].every(([shard, seq]) => (stoppedAt.get(shard) ?? 0) >= seq)) {
      ctx.note(`nothing to discard: node ${n.id} had applied everything the streams hold`);
      return false;
    }
    const reaches = async () => {
      const newest = (await storedSnapshots(cluster.disk.storeDir))[0];
      return newest !== undefined && [...last].every(([shard, seq]) => manifestPosition(newest, shard) >= seq)
        ? newest
        : undefined;
    };
    let via = 'the snapshot scheduler';
    let manifest = leaseHeld
      ? undefined
      : await waitFor('a snapshot of the end of the streams', reaches, {
          timeoutMs: 6000,
          intervalMs: 100,
        }).catch(() => undefined);
    if (manifest === undefined) {
      // No scheduled snapshot in time: an operator takes one.
      const by = running[0]!;
      via = `-save-snapshot on node ${by.id}${leaseHeld ? ` (node ${n.id} held the leader lease)` : ''}`;
      const cli = spawnCli(['-config', by.configPath, '-save-snapshot']);
      const exit = await cli.exited;
      if (exit !== 0)
        ctx.fail(`${id}: -save-snapshot on node ${by.id} exited ${exit}: ${cli.output.join(' | ')}`);
      manifest = await waitFor('a snapshot of the end of the streams', reaches, {
        timeoutMs: 10_000,
        intervalMs: 100,
      }).catch(() => undefined);
    }
    if (manifest === undefined) {
      ctx.fail(
        `${id}: no snapshot reached the end of the streams ${JSON.stringify(Object.fromEntries(last))}`,
      );
      return false;
    }
    let purged = 0;
    for (const [shard, seq] of last) {
      const res = await ctx.history.discardBelow(ctx.jsm, shard, seq + 1);
      purged += res.purged;
      // Only a purge of everything is safe from the replay bug above.
      if (res.lastSeq !== seq)
        ctx.fail(`${id}: shard ${shard} grew from ${seq} to ${res.lastSeq} while the nodes were to be quiet`);
    }
    ctx.stats.discardedMessages += purged;
    ctx.note(
      `discarded all ${purged} messages (streams end at ${JSON.stringify(Object.fromEntries(last))}, node ${n.id} ` +
        `is at ${JSON.stringify(Object.fromEntries(stoppedAt))}) after ${manifest.name} (node ${manifest.nodeId}) ` +
        `via ${via}; the other writers paused ${Date.now() - pausedAt} ms`,
    );
    return true;
  } finally {
    ctx.writers.resume();
  }
}

export async function fullSnapshotDisk(ctx: FaultContext): Promise<void> {
  const { cluster, note } = ctx;
  const area = ctx.schedule.pick(['store', 'temp'] as const satisfies readonly SnapshotDiskArea[]);
  const dir = cluster.disk.dir(area);
  const id = `full disk #${++ctx.stats.fullDiskFaults} (${area})`;
  const filledAt = Date.now();
  const bytes = cluster.disk.fill(area);
  note(`fill the snapshot ${area} dir (${bytes} bytes) until a snapshot save fails`);
  try {
    const failed = await waitFor(
      `a snapshot save to fail on the full ${area} dir`,
      () => findRecord(cluster, 'Unable to save snapshot', filledAt),
      { timeoutMs: 40_000, intervalMs: 200 },
    ).catch((err: unknown) => {
      ctx.fail(`${id}: ${(err as Error).message}`);
      return undefined;
    });
    if (failed !== undefined) await checkFailedSave(ctx, id, dir, failed);
  } finally {
    cluster.disk.free(area);
  }
  const freedAt = Date.now();
  note(`free the snapshot ${area} dir`);
  const saved = await waitFor(
    'a snapshot save to succeed after the disk was freed',
    () => findRecord(cluster, 'Snapshot saved', freedAt),
    { timeoutMs: 40_000, intervalMs: 200 },
  ).catch((err: unknown) => {
    ctx.fail(`${id}: ${(err as Error).message}`);
    return undefined;
  });
  if (saved !== undefined) {
    ctx.stats.savesAfterFreed++;
    note(`node ${saved.node.id} saved ${String(saved.record.name)} after the disk was freed`);
  }
}

/** The save failed: clearly (says no space, names the full directory), and its node keeps replicating. */
async function checkFailedSave(
  ctx: FaultContext,
  id: string,
  dir: string,
  failed: { node: ChaosNode; record: LogRecord },
): Promise<void> {
  const { node, record } = failed;
  const text = `${String(record.err)} ${String(record.store ?? '')}`;
  ctx.note(`node ${node.id}: ${String(record.msg)}: ${String(record.err)} (${String(record.code)})`);
  if (!NO_SPACE_CODES.has(String(record.code)) || !text.includes(dir) || !/space/i.test(text))
    ctx.fail(
      `${id}: node ${node.id}'s failed save does not say clearly that ${dir} is full: ${JSON.stringify(record)}`,
    );
  else ctx.stats.fullDiskSaveFailures++;
  const running = node.cli;
  const sum = () => [...ctx.cluster.positions(node).values()].reduce((a, b) => a + b, 0);
  const before = sum();
  await waitFor(`node ${node.id} to keep applying after its snapshot save failed`, () => sum() > before, {
    timeoutMs: 20_000,
    intervalMs: 100,
    seen: () => ({ before, now: sum() }),
  }).catch((err: unknown) => ctx.fail(`${id}: ${(err as Error).message}`));
  if (node.cli === undefined || node.cli !== running)
    ctx.fail(`${id}: node ${node.id} stopped after its snapshot save failed`);
}

/** Waits until the restarted node applied everything the streams held when it came back. */
async function waitCaughtUp(ctx: FaultContext, n: ChaosNode, id: string): Promise<void> {
  const target = await lastSeqs(ctx);
  let seen: Map<number, number> | undefined;
  await waitFor(
    `node ${n.id} to catch up with the streams after its restart`,
    () => {
      seen = ctx.cluster.positions(n);
      return [...target].every(([shard, last]) => (seen!.get(shard) ?? 0) >= last);
    },
    {
      timeoutMs: 30_000,
      intervalMs: 100,
      seen: () => ({ target: Object.fromEntries(target), at: seen && Object.fromEntries(seen) }),
    },
  ).catch((err: unknown) => ctx.fail(`${id}: ${(err as Error).message}`));
}

/** The last sequence of every shard stream. */
async function lastSeqs(ctx: FaultContext): Promise<Map<number, number>> {
  const last = new Map<number, number>();
  for (const shard of shardNumbers(ctx.shards))
    last.set(shard, (await ctx.jsm.streams.info(streamName(STREAM_PREFIX, shard))).state.last_seq);
  return last;
}

/** Whether the node's running process holds the snapshot leader lease, by its log. */
function isSnapshotLeader(cluster: ChaosCluster, n: ChaosNode): boolean {
  const incarnation = n.processes.length;
  const last = cluster
    .logRecords(n)
    .filter(
      (r) =>
        r.process === incarnation &&
        (r.msg === 'became snapshot leader' || r.msg === 'lost snapshot leadership'),
    )
    .at(-1);
  return last?.msg === 'became snapshot leader';
}

/** The first record with message `msg` logged by any node at or after `sinceMs`. */
function findRecord(
  cluster: ChaosCluster,
  msg: string,
  sinceMs: number,
): { node: ChaosNode; record: LogRecord } | undefined {
  for (const node of cluster.nodes) {
    const record = cluster.logRecords(node, sinceMs).find((r) => r.msg === msg);
    if (record !== undefined) return { node, record };
  }
  return undefined;
}

/** Tokens of the upserts this node captured and has not published (its global change log). */
function pendingTokens(dbPath: string): Set<string> {
  const db = new Database(dbPath, { readonly: true, timeout: 10_000 });
  try {
    const tokens = new Set<string>();
    for (const table of CHAOS_TABLES) {
      const values = db
        .prepare(
          `SELECT c.${q(valueColumn('v'))} FROM ${q(GLOBAL_LOG)} AS g JOIN ${q(changeLogTable(table))} AS c ` +
            `ON c.id = g.change_table_id WHERE g.table_name = ? AND c.type <> 'delete'`,
        )
        .pluck()
        .all(table) as (string | Buffer)[];
      for (const v of values) tokens.add(Buffer.isBuffer(v) ? v.toString() : String(v));
    }
    return tokens;
  } finally {
    db.close();
  }
}
