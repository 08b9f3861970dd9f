/**
 * Names of streams, subjects and buckets, all derived from the configured
 * prefixes so several clusters can share one NATS account (HarmonyLite's fixed
 * KV names collided). Shards are numbered from 1 in every name. Pure.
 */
export function streamName(streamPrefix: string, shard: number): string {
  return `${streamPrefix}-${shard}`;
}

/** The shard number of a change stream's name, or undefined for any other stream. */
export function shardOfStream(streamPrefix: string, name: string): number | undefined {
  if (!name.startsWith(`${streamPrefix}-`)) return undefined;
  const rest = name.slice(streamPrefix.length + 1);
  if (!/^[1-9]\d{0,5}$/.test(rest)) return undefined;
  return Number(rest);
}

export function subjectName(subjectPrefix: string, shard: number): string {
  return `${subjectPrefix}-${shard}`;
}

/** Object-store bucket of snapshots: `[snapshot.nats] bucket`, else `<stream_prefix>-snapshot-store`. */
export function snapshotBucket(streamPrefix: string, configured: string): string {
  return configured !== '' ? configured : `${streamPrefix}-snapshot-store`;
}

/** KV bucket holding the snapshot leader lease. */
export function leaseBucket(streamPrefix: string): string {
  return `${streamPrefix}-snapshot-lease`;
}

/** KV bucket where each node reports its positions for `-status`. */
export function statusBucket(streamPrefix: string): string {
  return `${streamPrefix}-node-status`;
}

/** Shard numbers 1..shards. */
export function shardNumbers(shards: number): number[] {
  return Array.from({ length: shards }, (_, i) => i + 1);
}

/**
 * KV bucket of cluster-wide records that never expire: the settings every node
 * must share, and the highest batch sequence each node has reserved.
 */
export function clusterBucket(streamPrefix: string): string {
  return `${streamPrefix}-cluster`;
}

/** KV bucket where each live node holds a lease on its node id (entries expire: max_age). */
export function nodeRegistryBucket(streamPrefix: string): string {
  return `${streamPrefix}-node-registry`;
}

/** KV bucket of the nodes' public signing keys (`<node id>.<fingerprint>`). */
export function nodeKeyBucket(streamPrefix: string): string {
  return `${streamPrefix}-node-keys`;
}

/**
 * Stream of replicated migrations (`-migrate`): one message per migration file, applied by
 * every node in stream order; the stream sequence is the migration's version.
 */
export function migrationStream(streamPrefix: string): string {
  return `${streamPrefix}-migrations`;
}

export function migrationSubject(subjectPrefix: string): string {
  return `${subjectPrefix}-migrations`;
}
