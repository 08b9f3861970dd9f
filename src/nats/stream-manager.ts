import {
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
  type StreamConfig,
  type StreamInfo,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import type { Logger } from '../logger.ts';
import { shardNumbers, shardOfStream, streamName, subjectName } from './naming.ts';
import { isStreamNotFound } from './nats-errors.ts';

export interface StreamSettings {
  readonly streamPrefix: string;
  readonly subjectPrefix: string;
  readonly shards: number;
  readonly maxEntries: number;
  readonly replicas: number;
  readonly duplicateWindowMs: number;
  readonly updateExisting: boolean;
  /** Further shard streams to create when missing (streams other nodes publish to); default none. */
  readonly alsoShards?: readonly number[];
}

/** The seed's stream settings: file storage, limits retention, `max_entries` messages, discard old. */
export function desiredStreamConfig(
  s: StreamSettings,
  shard: number,
): Partial<StreamConfig> & { name: string } {
  return {
    name: streamName(s.streamPrefix, shard),
    subjects: [subjectName(s.subjectPrefix, shard)],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_msgs: s.maxEntries,
    num_replicas: s.replicas,
    duplicate_window: nanos(s.duplicateWindowMs),
    allow_direct: true,
  };
}

function differences(have: StreamConfig, want: Partial<StreamConfig>): string[] {
  const out: string[] = [];
  if (have.max_msgs !== want.max_msgs) out.push(`max_msgs ${have.max_msgs} -> ${want.max_msgs}`);
  if (have.num_replicas !== want.num_replicas)
    out.push(`replicas ${have.num_replicas} -> ${want.num_replicas}`);
  if (have.duplicate_window !== want.duplicate_window)
    out.push(`duplicate_window ${have.duplicate_window} -> ${want.duplicate_window}`);
  if (have.discard !== want.discard) out.push(`discard ${have.discard} -> ${want.discard}`);
  if (JSON.stringify(have.subjects) !== JSON.stringify(want.subjects))
    out.push(`subjects ${have.subjects} -> ${want.subjects}`);
  return out;
}

/**
 * Creates missing shard streams; an existing stream whose settings differ is
 * updated only with `update_existing` (otherwise a warning names the differences).
 */
export async function ensureStreams(jsm: JetStreamManager, s: StreamSettings, logger: Logger): Promise<void> {
  const shards = new Set([...shardNumbers(s.shards), ...(s.alsoShards ?? [])]);
  for (const shard of [...shards].sort((a, b) => a - b)) {
    const want = desiredStreamConfig(s, shard);
    let info: StreamInfo | undefined;
    try {
      info = await jsm.streams.info(want.name);
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
    }
    if (info === undefined) {
      await jsm.streams.add(want);
      logger.info({ stream: want.name, replicas: s.replicas, max_msgs: s.maxEntries }, 'created stream');
      continue;
    }
    const diff = differences(info.config, want);
    if (diff.length === 0) continue;
    if (s.updateExisting) {
      await jsm.streams.update(want.name, { ...info.config, ...want });
      logger.info({ stream: want.name, changes: diff }, 'updated stream');
    } else {
      logger.warn(
        { stream: want.name, differences: diff },
        'stream settings differ from the config; set [replication_log] update_existing = true to update',
      );
    }
  }
}

/**
 * The shard numbers of every change stream under the prefix (`<prefix>-<n>`),
 * sorted: the streams any node publishes to, whatever its own `shards`.
 * KV and object-store buckets are streams named `KV_*` / `OBJ_*`, never matched.
 */
export async function listShardStreams(jsm: JetStreamManager, streamPrefix: string): Promise<number[]> {
  const found: number[] = [];
  for await (const name of jsm.streams.names()) {
    const shard = shardOfStream(streamPrefix, name);
    if (shard !== undefined) found.push(shard);
  }
  return found.sort((a, b) => a - b);
}
