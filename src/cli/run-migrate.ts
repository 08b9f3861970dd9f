import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { MIGRATIONS, quoteIdent as q } from '../cdc/names.ts';
import { TableFilter } from '../cdc/table-filter.ts';
import { RowDigest } from '../codec/row-digest.ts';
import { ConfigError } from '../config/config-error.ts';
import type { Config } from '../config/config.ts';
import { excludedTables } from '../config/excluded-tables.ts';
import { requireDatabase } from '../config/load-config.ts';
import type { Logger } from '../logger.ts';
import { contentHash, type Migration } from '../migration/migration-message.ts';
import { MigrationError, runMigration } from '../migration/migration-runner.ts';
import {
  hasMigrationTable,
  migrationPosition,
  migrationRecord,
  recordMigration,
} from '../migration/migration-store.ts';
import {
  ensureMigrationStream,
  migrationStreamState,
  publishMigration,
  readAllMigrations,
} from '../migration/migration-stream.ts';
import { refusedStatement, splitStatements } from '../migration/sql-statements.ts';
import { migrationStream } from '../nats/naming.ts';
import { resolveNodeId } from '../node/node-id.ts';
import { openDatabase } from '../sqlite/open-database.ts';
import { connectForCommand, type CommandClusterOptions } from './command-nats.ts';
import { errorMessage } from '../error-message.ts';

/** The file's SQL, or a usage error naming what is wrong with it. */
function readMigrationFile(file: string): string {
  let sql: string;
  try {
    sql = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read the migration file ${file}: ${errorMessage(err)}`, {
      hint: 'give -migrate the path of a .sql file',
      cause: err,
    });
  }
  const statements = splitStatements(sql);
  if (statements.length === 0)
    throw new ConfigError(`the migration file ${file} holds no SQL statement`, {
      hint: 'write the DDL (and any data statements) to run, separated by semicolons',
    });
  for (const s of statements) {
    const refused = refusedStatement(s.text);
    if (refused !== undefined)
      throw new ConfigError(`${file} line ${s.line}: ${refused}`, {
        hint: 'remove it: every node runs the whole file in one transaction of its own',
      });
  }
  return sql;
}

/**
 * `-migrate FILE`: publishes the file on the cluster's migration stream, where
 * every node (this one included) applies it in order, in one transaction. A file
 * whose content is already in the stream is not published again. When this
 * node's database is up to date with the stream, the file is first run against
 * it and rolled back, so an error in the SQL is reported before any node sees it.
 * On the embedded default it uses the running node's server, or starts the
 * node's server when the node is down (the node applies the migration at start).
 */
export async function runMigrate(
  config: Config,
  file: string,
  logger: Logger,
  cluster: CommandClusterOptions = {},
  out: NodeJS.WritableStream = process.stdout,
): Promise<number> {
  requireDatabase(config);
  const sql = readMigrationFile(file);
  const hash = contentHash(sql);
  const name = basename(file);
  const nodeId =
    resolveNodeId(config.node_id, config.db_path, { busyTimeoutMs: config.busy_timeout, create: false }) ?? 0;
  const nats = await connectForCommand(config, nodeId, 'harmonylite-migrate', logger, { cluster });
  try {
    const jsm = await jetstreamManager(nats.nc);
    const prefix = config.nats.stream_prefix;
    await ensureMigrationStream(jsm, {
      streamPrefix: prefix,
      subjectPrefix: config.nats.subject_prefix,
      replicas: config.replication_log.replicas,
      duplicateWindowMs: config.replication_log.duplicate_window,
    });
    const published = await readAllMigrations(jsm, prefix);
    const same = published.find((m) => m.hash === hash);
    if (same !== undefined) {
      out.write(
        `${name}: already published as migration ${same.seq} (${same.name}, same content): nothing to do\n`,
      );
      return 0;
    }
    const { lastSeq } = await migrationStreamState(jsm, prefix);
    const check = await checkLocally(config, nodeId, { seq: lastSeq + 1, name, hash, sql }, lastSeq);
    if (check.error !== undefined) {
      process.stderr.write(
        `Error: ${name} fails on this node's database (${config.db_path}): ${check.error}\n`,
      );
      process.stderr.write('Try: fix the file and run -migrate again; nothing was published\n');
      return 1;
    }
    const r = await publishMigration(jetstream(nats.nc), config.nats.subject_prefix, {
      name,
      hash,
      sql,
      publishedBy: nodeId,
      publishedAt: Date.now(),
    });
    out.write(
      `${name}: published as migration ${r.seq} on ${migrationStream(prefix)} (sha256 ${hash.slice(0, 12)}); ` +
        `every node applies it in order${check.note === undefined ? '' : `\n  ${check.note}`}\n`,
    );
    return 0;
  } finally {
    await nats.close();
  }
}

/** Runs the migration against this node's database and rolls it back; skipped when the node is behind. */
async function checkLocally(
  config: Config,
  nodeId: number,
  m: Omit<Migration, 'publishedBy' | 'publishedAt'>,
  lastSeq: number,
): Promise<{ error?: string; note?: string }> {
  const db = openDatabase(config.db_path, { busyTimeoutMs: config.busy_timeout, readonly: false });
  try {
    const position = hasMigrationTable(db) ? migrationPosition(db) : 0;
    if (position < lastSeq)
      return {
        note: `not checked against this node's database: it has not applied migrations ${position + 1}..${lastSeq} yet`,
      };
    try {
      runMigration(
        db,
        { ...m, publishedBy: nodeId, publishedAt: Date.now() },
        {
          filter: new TableFilter(config.include_tables, excludedTables(config)),
          install: { captureWrites: config.publish, index: { digest: await RowDigest.create(), nodeId } },
          dryRun: true,
        },
      );
      return {};
    } catch (err) {
      if (!(err instanceof MigrationError)) throw err;
      return {
        error:
          err.statement === undefined
            ? err.message
            : `line ${err.statement.line}: ${err.statement.text}: ${err.message}`,
      };
    }
  } finally {
    db.close();
  }
}

/**
 * `-migrate-resolved SEQ`: records migration SEQ as done on this node without
 * running it (the operator applied its effect by hand, or a corrected migration
 * replaces it), so a node held by it goes on with the next. Local: a running
 * node sees it at its next retry; a stopped one at start.
 */
export function runMigrateResolved(
  config: Config,
  seq: number,
  out: NodeJS.WritableStream = process.stdout,
): number {
  requireDatabase(config);
  if (seq < 1) throw new ConfigError('migration sequences start at 1', { hint: 'run -status to see them' });
  const db = openDatabase(config.db_path, { busyTimeoutMs: config.busy_timeout, readonly: false });
  try {
    if (!hasMigrationTable(db))
      throw new ConfigError(`no migration was ever applied to ${config.db_path}`, {
        hint: 'start the node once on this database first',
      });
    const r = migrationRecord(db, seq);
    if (r?.status === 'applied') {
      out.write(`migration ${seq} (${r.name}) is applied on this node: nothing to do\n`);
      return 0;
    }
    recordMigration(db, {
      seq,
      hash: r?.hash ?? '',
      name: r?.name ?? '',
      status: 'resolved',
      error:
        r?.error === undefined || r.error === null
          ? 'resolved by the operator'
          : `resolved by the operator after: ${r.error}`,
    });
    const left = db
      .prepare(`SELECT count(*) FROM ${q(MIGRATIONS)} WHERE status = 'failed'`)
      .pluck()
      .get() as number;
    out.write(
      `migration ${seq}${r?.name ? ` (${r.name})` : ''} marked resolved on this node: it will not run here; ` +
        `the node goes on with the next migration${left > 0 ? ` (${left} other failed migration(s) still hold)` : ''}\n`,
    );
    return 0;
  } finally {
    db.close();
  }
}
