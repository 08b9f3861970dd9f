import { jetstreamManager } from '@nats-io/jetstream';
import { ConfigError } from '../config/config-error.ts';
import type { Config } from '../config/config.ts';
import { requireDatabase } from '../config/load-config.ts';
import type { Logger } from '../logger.ts';
import { connectNats } from '../nats/nats-connection.ts';
import { streamName } from '../nats/naming.ts';
import { openDatabase } from '../node/open-database.ts';
import { RowDigest } from '../codec/row-digest.ts';
import { HybridClock } from '../replication/hybrid-clock.ts';
import { BatchApplier } from '../replication/batch-applier.ts';

/**
 * `-dead-letter-stuck SHARD`: the operator's way out of a message that waits
 * for a schema that will never come. It copies the message after the shard's
 * stored position into the dead letters and advances the position, in one
 * transaction of the application database; a running node sees the position
 * moved and resumes with the next message.
 */
export async function runDeadLetterStuck(config: Config, shard: number, logger: Logger): Promise<number> {
  requireDatabase(config);
  if (shard < 1 || shard > config.replication_log.shards) {
    throw new ConfigError(`shard ${shard} does not exist: shards are 1..${config.replication_log.shards}`);
  }
  if (config.nats.urls.length === 0) {
    throw new ConfigError('-dead-letter-stuck needs [nats] urls to read the message', {
      hint: "set [nats] urls to the embedded server's address (see the node's log line 'embedded nats-server started')",
    });
  }
  const db = openDatabase(config.db_path, { busyTimeoutMs: config.busy_timeout, readonly: false });
  const nc = await connectNats(config.nats, config.nats.urls, 'harmonylite-cli', logger);
  try {
    // Only positions and dead letters are written here: no change is applied, so no clock is kept.
    const applier = new BatchApplier(db, {
      includeTables: config.include_tables,
      excludeTables: config.exclude_tables,
      nodeId: config.node_id,
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
    await nc.close();
    db.close();
  }
}
