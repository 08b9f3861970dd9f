import { jetstreamManager } from '@nats-io/jetstream';
import { ConfigError } from '../config/config-error.ts';
import { excludedTables } from '../config/excluded-tables.ts';
import type { Config } from '../config/config.ts';
import { requireDatabase } from '../config/load-config.ts';
import type { Logger } from '../logger.ts';
import { streamName } from '../nats/naming.ts';
import { resolveNodeId } from '../node/node-id.ts';
import { openDatabase } from '../sqlite/open-database.ts';
import { RowDigest } from '../codec/row-digest.ts';
import { HybridClock } from '../replication/hybrid-clock.ts';
import { BatchApplier } from '../replication/batch-applier.ts';
import { connectForCommand, type CommandClusterOptions } from './command-nats.ts';

/**
 * `-dead-letter-stuck SHARD`: the operator's way out of a message that waits
 * for a schema that will never come. It copies the message after the shard's
 * stored position into the dead letters and advances the position, in one
 * transaction of the application database; a running node sees the position
 * moved and resumes with the next message. On the embedded default it reads the
 * running node's server, or starts the node's server when the node is down.
 */
export async function runDeadLetterStuck(
  config: Config,
  shard: number,
  logger: Logger,
  cluster: CommandClusterOptions = {},
): Promise<number> {
  requireDatabase(config);
  if (shard < 1 || shard > config.replication_log.shards) {
    throw new ConfigError(`shard ${shard} does not exist: shards are 1..${config.replication_log.shards}`);
  }
  const nodeId =
    resolveNodeId(config.node_id, config.db_path, { busyTimeoutMs: config.busy_timeout, create: false }) ?? 0;
  const nats = await connectForCommand(config, nodeId, 'harmonylite-cli', logger, { cluster });
  const nc = nats.nc;
  const db = openDatabase(config.db_path, { busyTimeoutMs: config.busy_timeout, readonly: false });
  try {
    // Only positions and dead letters are written here: no change is applied, so no clock is kept.
    const applier = new BatchApplier(db, {
      includeTables: config.include_tables,
      excludeTables: excludedTables(config),
      nodeId,
      clock: new HybridClock().state,
      digest: await RowDigest.create(),
      localWrites: config.publish,
      maxClockSkewMs: config.max_clock_skew,
    });
    const seq = applier.position(shard) + 1;
    const jsm = await jetstreamManager(nc);
    const stream = streamName(config.nats.stream_prefix, shard);
    const msg = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (msg === null) {
      process.stdout.write(`shard ${shard}: no message after position ${seq - 1}; nothing is stuck\n`);
      return 0;
    }
    applier.deadLetter(
      shard,
      { seq, msgId: msg.header?.get('Nats-Msg-Id') || undefined, data: msg.data },
      'moved to the dead letters by the operator',
    );
    process.stdout.write(`shard ${shard}: message ${seq} moved to the dead letters\n`);
    return 0;
  } finally {
    await nats.close();
    db.close();
  }
}
