import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type Database from 'better-sqlite3';
import {
  CAPTURED_TABLES,
  CONFLICTS,
  DEAD_LETTERS,
  GLOBAL_LOG,
  INTERNAL_TABLES,
  POSITIONS,
  quoteIdent as q,
} from '../cdc/names.ts';
import type { Config } from '../config/config.ts';
import { requireDatabase } from '../config/load-config.ts';
import type { Logger } from '../logger.ts';
import { connectNats } from '../nats/nats-connection.ts';
import { embeddedAuth, embeddedStoreDir, runningServerUrl } from './command-nats.ts';
import { shardNumbers, statusBucket, streamName } from '../nats/naming.ts';
import { resolveNodeId } from '../node/node-id.ts';
import { readNodeStatuses, type NodeStatusRecord } from '../node/node-status-reporter.ts';
import { openDatabase } from '../sqlite/open-database.ts';
import { listMigrations, type MigrationRecord } from '../migration/migration-store.ts';
import { errorMessage } from '../error-message.ts';
import { recentConflicts } from '../replication/row-version-store.ts';

/** This node's state as its database holds it (no daemon needed). */
interface LocalState {
  readonly installed: boolean;
  readonly tables: readonly string[];
  readonly pending: number;
  readonly shards: ReadonlyMap<number, { position: number; updatedAt: number }>;
  readonly deadLetters: ReadonlyMap<number, number>;
  /** Losing versions written to the conflict log in the last hour. */
  readonly recentConflicts: number;
  /** Replicated migrations this database applied, failed or passed over, in stream order. */
  readonly migrations: readonly MigrationRecord[];
}

interface StreamState {
  readonly lastSeq: number;
  readonly firstSeq: number;
}

function readLocalState(db: Database.Database): LocalState {
  const names = new Set(
    db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").pluck().all() as string[],
  );
  if (!INTERNAL_TABLES.every((t) => names.has(t))) {
    return {
      installed: false,
      tables: [],
      pending: 0,
      shards: new Map(),
      deadLetters: new Map(),
      recentConflicts: 0,
      migrations: listMigrations(db),
    };
  }
  const num = (v: unknown) => Number(v ?? 0);
  const tables = db
    .prepare(`SELECT name FROM ${q(CAPTURED_TABLES)} ORDER BY name`)
    .pluck()
    .all() as string[];
  const pending = num(
    db
      .prepare(`SELECT count(*) FROM ${q(GLOBAL_LOG)}`)
      .pluck()
      .get(),
  );
  const shards = new Map(
    (
      db.prepare(`SELECT shard, stream_seq, updated_at FROM ${q(POSITIONS)}`).all() as {
        shard: number;
        stream_seq: number;
        updated_at: number;
      }[]
    ).map((r) => [num(r.shard), { position: num(r.stream_seq), updatedAt: num(r.updated_at) }]),
  );
  const deadLetters = new Map(
    (
      db.prepare(`SELECT shard, count(*) AS n FROM ${q(DEAD_LETTERS)} GROUP BY shard`).all() as {
        shard: number;
        n: number;
      }[]
    ).map((r) => [num(r.shard), num(r.n)]),
  );
  return {
    installed: true,
    tables,
    pending,
    shards,
    deadLetters,
    recentConflicts: recentConflicts(db),
    migrations: listMigrations(db),
  };
}

async function readStreams(jsm: JetStreamManager, config: Config): Promise<Map<number, StreamState>> {
  const out = new Map<number, StreamState>();
  await Promise.all(
    shardNumbers(config.replication_log.shards).map(async (shard) => {
      const info = await jsm.streams.info(streamName(config.nats.stream_prefix, shard)).catch(() => null);
      if (info !== null) out.set(shard, { lastSeq: info.state.last_seq, firstSeq: info.state.first_seq });
    }),
  );
  return out;
}

/** Columns padded to their widest cell, two spaces apart, indented. */
function formatTable(header: readonly string[], rows: readonly (readonly string[])[], indent = '  '): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    indent +
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

/** "never", "4s ago", "3m ago", "2h ago", "5d ago". */
function ago(ms: number, now: number): string {
  if (ms <= 0) return 'never';
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 120) return `${s}s ago`;
  if (s < 7200) return `${Math.round(s / 60)}m ago`;
  if (s < 172_800) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86_400)}d ago`;
}

function lagOf(position: number, stream: StreamState | undefined): string {
  return stream === undefined ? '?' : String(Math.max(0, stream.lastSeq - position));
}

/** The replicated migrations recorded in this database; failed ones with their statement and error. */
function formatMigrations(records: readonly MigrationRecord[], now: number): string {
  if (records.length === 0) return '\n  migrations: none applied\n';
  const failed = records.filter((r) => r.status === 'failed');
  let text = `\n  migrations: ${records.filter((r) => r.status === 'applied').length} applied`;
  text += failed.length > 0 ? `, ${failed.length} FAILED (holding the migration stream)\n\n` : '\n\n';
  text += formatTable(
    ['SEQ', 'NAME', 'STATUS', 'WHEN', 'DETAIL'],
    records.map((r) => [
      String(r.seq),
      r.name === '' ? '-' : r.name,
      r.status,
      ago(r.at, now),
      [r.statement, r.error].filter((x) => x !== null && x !== '').join(': ') || '-',
    ]),
  );
  return text;
}

/**
 * `harmonylite -config f -status`: prints this node's state from its database
 * (tables, pending changes, position and dead letters per shard, replicated
 * migrations with the failed ones' statement and error) and, from
 * NATS, every node's position and lag per shard, as reported by running nodes
 * into the status bucket (nodes silent for a minute drop out). Exit 0 when it
 * printed everything it was configured to; 1 when NATS could not be read.
 */
export async function runStatus(
  config: Config,
  logger: Logger,
  out: NodeJS.WritableStream = process.stdout,
): Promise<number> {
  requireDatabase(config);
  const nodeId = resolveNodeId(config.node_id, config.db_path, {
    busyTimeoutMs: config.busy_timeout,
    create: false,
  });
  const db = openDatabase(config.db_path, { busyTimeoutMs: config.busy_timeout, readonly: true });
  let local: LocalState;
  try {
    local = readLocalState(db);
  } finally {
    db.close();
  }

  let streams = new Map<number, StreamState>();
  let nodes: NodeStatusRecord[] | undefined;
  let natsError: string | undefined;
  const bucket = statusBucket(config.nats.stream_prefix);
  // On the embedded default, the running node's server (never one started for a status).
  const storeDir = embeddedStoreDir(config);
  const embedded = config.nats.urls.length === 0 ? runningServerUrl(storeDir) : undefined;
  const servers = embedded !== undefined ? [embedded] : config.nats.urls;
  const nats =
    embedded === undefined ? config.nats : (embeddedAuth(config.nats, storeDir)?.nats ?? config.nats);
  if (servers.length > 0) {
    try {
      // One attempt: a status command should answer now, not after the daemon's retry schedule.
      const nc = await connectNats({ ...nats, connect_retries: 0 }, servers, 'harmonylite-status', logger);
      try {
        streams = await readStreams(await jetstreamManager(nc), config);
        nodes = await readNodeStatuses(nc, bucket);
      } finally {
        await nc.close();
      }
    } catch (err) {
      natsError = errorMessage(err);
    }
  }

  const now = Date.now();
  let text = `Node ${nodeId ?? '(id not generated yet)'} (this node)  ${config.db_path}\n`;
  if (!local.installed) {
    text += '  capture is not installed in this database (the node has not run on it yet)\n';
  } else {
    const totalDead = [...local.deadLetters.values()].reduce((a, b) => a + b, 0);
    text += `  tables watched: ${local.tables.length}${local.tables.length > 0 ? ` (${local.tables.join(', ')})` : ''}\n`;
    text += `  pending changes: ${local.pending}\n`;
    text += `  dead letters: ${totalDead}\n`;
    text += `  conflicts in the last hour: ${local.recentConflicts} (losing versions, in ${CONFLICTS})\n\n`;
    text += formatTable(
      ['SHARD', 'STREAM', 'LAST SEQ', 'POSITION', 'LAG', 'DEAD LETTERS', 'APPLIED'],
      shardNumbers(config.replication_log.shards).map((shard) => {
        const p = local.shards.get(shard) ?? { position: 0, updatedAt: 0 };
        const s = streams.get(shard);
        return [
          String(shard),
          streamName(config.nats.stream_prefix, shard),
          s === undefined ? '?' : String(s.lastSeq),
          String(p.position),
          lagOf(p.position, s),
          String(local.deadLetters.get(shard) ?? 0),
          ago(p.updatedAt, now),
        ];
      }),
    );
  }

  text += formatMigrations(local.migrations, now);

  text += '\n';
  if (servers.length === 0) {
    text +=
      'Cluster: not shown: [nats] urls is empty and this node is not running (its embedded server is down).\n';
    text += '  Start the node, or set [nats] urls to a server of the cluster, to see every node.\n';
  } else if (natsError !== undefined) {
    text += `Cluster: NATS could not be read: ${natsError}\n`;
  } else if (nodes === undefined || nodes.length === 0) {
    text += `Cluster: no node has reported its status (bucket ${bucket}) in the last minute.\n`;
  } else {
    text += `Cluster: ${nodes.length} node${nodes.length === 1 ? '' : 's'} reporting (bucket ${bucket})\n\n`;
    const rows: string[][] = [];
    for (const n of nodes) {
      const name = n.node_id === nodeId ? `${n.node_id} *` : String(n.node_id);
      const common = [
        String(n.pending),
        ago(n.last_publish_at, now),
        n.nats_connected ? ago(n.updated_at, now) : `${ago(n.updated_at, now)} (NATS down)`,
      ];
      if (n.shards.length === 0)
        rows.push([name, '-', '-', '-', n.replicate ? 'starting' : 'no replicate', ...common]);
      for (const s of n.shards) {
        rows.push([
          name,
          String(s.shard),
          String(s.position),
          lagOf(s.position, streams.get(s.shard)),
          s.state,
          ...common,
        ]);
      }
    }
    text += formatTable(
      ['NODE', 'SHARD', 'POSITION', 'LAG', 'STATE', 'PENDING', 'LAST PUBLISH', 'REPORTED'],
      rows,
    );
    text += '  (* this node; LAG = stream last sequence - position)\n';
    const migrating = nodes.filter((n) => n.migration_position !== undefined);
    if (migrating.length > 0) {
      text += '\n';
      text += formatTable(
        ['NODE', 'MIGRATION', 'HELD'],
        migrating.map((n) => [
          n.node_id === nodeId ? `${n.node_id} *` : String(n.node_id),
          String(n.migration_position),
          n.migration_held === undefined
            ? '-'
            : `migration ${n.migration_held.seq} (${n.migration_held.name}): ${n.migration_held.error}`,
        ]),
      );
      text += '  (MIGRATION = last replicated migration applied, in stream order)\n';
    }
    const reporting = nodes.filter((n) => n.conflicts_last_hour !== undefined);
    if (reporting.length > 0)
      text += `\n  conflicts in the last hour: ${reporting.map((n) => `node ${n.node_id}: ${n.conflicts_last_hour}`).join(', ')}\n`;
    for (const n of nodes) {
      const v = n.last_verify;
      if (v === undefined) continue;
      const result =
        v.error !== undefined
          ? `failed: ${v.error}`
          : v.diverged > 0
            ? `${v.diverged} key(s) differ, ${v.in_flight} in flight`
            : `all ${v.nodes} nodes agree on ${v.rows} rows`;
      text += `\nLast verify (by node ${n.node_id}, ${ago(v.at, now)}): ${result}\n`;
    }
  }
  out.write(text);
  return natsError === undefined ? 0 : 1;
}
