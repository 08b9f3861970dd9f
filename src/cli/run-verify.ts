import { jetstreamManager } from '@nats-io/jetstream';
import { globToRegExp } from '../cdc/table-filter.ts';
import { RowDigest } from '../codec/row-digest.ts';
import type { Config } from '../config/config.ts';
import { requireDatabase } from '../config/load-config.ts';
import type { Logger } from '../logger.ts';
import { resolveNodeId } from '../node/node-id.ts';
import { ClusterVerify, type VerifyReport } from '../verify/cluster-verify.ts';
import { formatReport } from '../verify/verify-report.ts';
import { planRepair, runRepair } from '../verify/repair.ts';
import { connectForCommand, type CommandClusterOptions } from './command-nats.ts';

export interface VerifyCommandOptions {
  /** `-tables`: comma-separated globs. */
  readonly tables?: string;
  readonly repair: boolean;
  readonly cluster?: CommandClusterOptions;
  /** Pause between rounds, ms (tests shorten it). */
  readonly settleMs?: number;
}

/**
 * `-verify [-tables GLOBS] [-repair]`: compares every running node's
 * replicated state and prints what differs. Exit 0 when nothing diverged,
 * 1 when something did (after -repair: when something still does).
 */
export async function runVerify(
  config: Config,
  logger: Logger,
  options: VerifyCommandOptions,
  out: NodeJS.WritableStream = process.stdout,
): Promise<number> {
  requireDatabase(config);
  const nodeId =
    resolveNodeId(config.node_id, config.db_path, { busyTimeoutMs: config.busy_timeout, create: false }) ?? 0;
  const globs = options.tables?.split(',').map((g) => globToRegExp(g.trim()));
  const nats = await connectForCommand(config, nodeId, 'harmonylite-verify', logger, {
    ...(options.cluster === undefined ? {} : { cluster: options.cluster }),
    retries: 0,
  });
  try {
    const digest = await RowDigest.create();
    const describeKey = (pk: string) => describeKeyBytes(digest, pk);
    const verify = new ClusterVerify(nats.nc, await jetstreamManager(nats.nc), {
      streamPrefix: config.nats.stream_prefix,
      shards: config.replication_log.shards,
      ...(globs === undefined ? {} : { tables: (t: string) => globs.some((g) => g.test(t)) }),
      ...(options.settleMs === undefined ? {} : { settleMs: options.settleMs }),
    });
    const hellos = await verify.discover();
    if (hellos.length === 0) {
      out.write('No node answered the verify request: is any node of this cluster running?\n');
      return 1;
    }
    const nodes = hellos.map((h) => h.nodeId);
    let report: VerifyReport = await verify.verify(nodes);
    out.write(formatReport(report, describeKey));
    if (!options.repair || report.diverged === 0) return report.diverged === 0 ? 0 : 1;
    const differences = report.tables.flatMap((t) => t.differences);
    const outcomes = await runRepair(verify, planRepair(differences), differences, describeKey);
    out.write('\nRepair:\n');
    for (const o of outcomes) for (const line of o.lines) out.write(`  ${line}\n`);
    out.write('\nAfter repair:\n');
    report = await verify.verify(nodes);
    out.write(formatReport(report, describeKey));
    return report.diverged === 0 ? 0 : 1;
  } finally {
    await nats.close();
  }
}

/** A key as its values, e.g. `(42)` or `('a', 2)`. */
function describeKeyBytes(digest: RowDigest, pk: string): string {
  const values = digest.decodeKey(Buffer.from(pk, 'base64'));
  return `(${values
    .map((v) =>
      v === null
        ? 'NULL'
        : typeof v === 'string'
          ? `'${v.replaceAll("'", "''")}'`
          : v instanceof Uint8Array
            ? `x'${Buffer.from(v).toString('hex')}'`
            : String(v),
    )
    .join(', ')})`;
}
