import type { Config } from '../config/config.ts';
import { excludedTables } from '../config/excluded-tables.ts';
import { requireDatabase } from '../config/load-config.ts';
import { computeSchemaHash } from '../cdc/schema-hash.ts';
import { TableFilter } from '../cdc/table-filter.ts';
import { listCapturableTables } from '../cdc/table-schema.ts';
import { packageVersion } from '../health/package-version.ts';
import type { Logger } from '../logger.ts';
import { statusBucket } from '../nats/naming.ts';
import { resolveNodeId } from '../node/node-id.ts';
import { openDatabase } from '../sqlite/open-database.ts';
import { connectForCommand, type CommandClusterOptions } from './command-nats.ts';
import { readNodeStatuses } from '../node/node-status-reporter.ts';

function nodeIdOf(config: Config): number {
  return (
    resolveNodeId(config.node_id, config.db_path, { busyTimeoutMs: config.busy_timeout, create: false }) ?? 0
  );
}

/**
 * `-schema-status`: the schema hash of this node's replicated tables, computed
 * from the database file as the node computes it (its "Computed schema hash"
 * log line), and the tables it covers. Needs no NATS and no running node.
 */
export function runSchemaStatus(config: Config, out: NodeJS.WritableStream = process.stdout): number {
  requireDatabase(config);
  const db = openDatabase(config.db_path, { busyTimeoutMs: config.busy_timeout, readonly: true });
  let tables: string[];
  let hash: string;
  try {
    const filter = new TableFilter(config.include_tables, excludedTables(config));
    tables = listCapturableTables(db, filter).tables.map((t) => t.name);
    hash = computeSchemaHash(db, tables);
  } finally {
    db.close();
  }
  out.write(
    [
      'Local Schema Status',
      '===================',
      `Schema Hash: ${hash}`,
      `Node ID: ${nodeIdOf(config)}`,
      `HarmonyLite Version: ${packageVersion()}`,
      '',
      'Watched Tables:',
      ...tables.map((t) => `  - ${t}`),
      '',
    ].join('\n'),
  );
  return 0;
}

/**
 * `-schema-status-cluster`: every node's schema hash as it last reported it in
 * the status bucket, grouped; exit 0 when all agree, 1 when they differ, so a
 * rolling upgrade script can wait for convergence.
 */
export async function runSchemaStatusCluster(
  config: Config,
  logger: Logger,
  cluster: CommandClusterOptions = {},
  out: NodeJS.WritableStream = process.stdout,
): Promise<number> {
  requireDatabase(config);
  const nats = await connectForCommand(config, nodeIdOf(config), 'harmonylite-schema-status', logger, {
    cluster,
    retries: 0,
  });
  let nodes;
  try {
    nodes = (await readNodeStatuses(nats.nc, statusBucket(config.nats.stream_prefix))) ?? [];
  } finally {
    await nats.close();
  }
  const lines = ['Cluster Schema Status', '====================='];
  if (nodes.length === 0) {
    lines.push('No schema state information available from cluster', '');
    out.write(lines.join('\n'));
    return 0;
  }
  const groups = new Map<string, number[]>();
  for (const n of nodes) {
    const hash = n.schema_hash ?? '(not reported: an older version)';
    groups.set(hash, [...(groups.get(hash) ?? []), n.node_id]);
  }
  const consistent = groups.size === 1;
  lines.push(`Total Nodes: ${nodes.length}`, `Consistent: ${consistent ? 'Yes' : 'No'}`, '', 'Hash Groups:');
  for (const [hash, ids] of groups)
    lines.push(`  ${hash.slice(0, 16)}: ${ids.map((id) => `Node ${id}`).join(', ')}`);
  lines.push('', 'Node Details:');
  for (const n of nodes) {
    lines.push(
      `  Node ${n.node_id}:`,
      `    Schema Hash: ${n.schema_hash ?? '(not reported)'}`,
      `    HarmonyLite Version: ${n.version}`,
      `    Updated At: ${new Date(n.updated_at).toISOString()}`,
    );
  }
  lines.push('');
  out.write(lines.join('\n'));
  return consistent ? 0 : 1;
}
