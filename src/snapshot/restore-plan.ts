/**
 * Whether a node must restore a snapshot, and which ones it may restore
 * (invariant 8). Pure: the caller reads the streams, positions and manifests.
 */
import { SnapshotError } from './snapshot-error.ts';
import { manifestPosition, type SnapshotManifest } from './snapshot-manifest.ts';

/** A shard stream's kept range, from its stream info. */
export interface StreamRange {
  readonly shard: number;
  /** First kept message (last_seq + 1 when the stream is empty). */
  readonly firstSeq: number;
  readonly lastSeq: number;
}

export interface BehindShard {
  readonly shard: number;
  /** This node's applied position (0 = none). */
  readonly position: number;
  readonly firstSeq: number;
}

/**
 * Shards whose stream discarded messages after this node's position: replaying
 * from position + 1 would skip them. A node that never applied anything is
 * behind as soon as a stream discarded its first message.
 */
export function shardsBehind(
  streams: readonly StreamRange[],
  positions: ReadonlyMap<number, number>,
): BehindShard[] {
  return streams
    .map((s) => ({ shard: s.shard, position: positions.get(s.shard) ?? 0, firstSeq: s.firstSeq }))
    .filter((b) => b.position + 1 < b.firstSeq);
}

/** Why `manifest` cannot seed this node's streams, or undefined when it can. */
export function unusableReason(
  manifest: SnapshotManifest,
  streams: readonly StreamRange[],
  expected: { readonly streamPrefix: string },
): string | undefined {
  if (manifest.streamPrefix !== expected.streamPrefix)
    return `made for streams ${manifest.streamPrefix}-*, this node uses ${expected.streamPrefix}-*`;
  // The shard count may differ (a rolling change of it): what matters is that the
  // snapshot's position reaches every stream that exists (0 for a stream it never saw).
  for (const s of streams) {
    const position = manifestPosition(manifest, s.shard);
    if (position + 1 < s.firstSeq)
      return `shard ${s.shard} is at ${position}, but the stream starts at ${s.firstSeq}`;
    if (position > s.lastSeq)
      return `shard ${s.shard} is at ${position}, beyond the stream's last message ${s.lastSeq} (was the stream recreated?)`;
  }
  return undefined;
}

/**
 * The snapshots this node may restore, newest first: those whose position of
 * every shard reaches the stream's first kept message, so replaying from the
 * snapshot leaves no gap. Throws `ERR_SNAPSHOT_MISSING` when the store holds
 * none at all and `ERR_SNAPSHOT_TOO_OLD` when none qualifies: restoring would
 * silently lose the discarded messages.
 */
export function restoreCandidates(
  behind: readonly BehindShard[],
  streams: readonly StreamRange[],
  manifests: readonly SnapshotManifest[],
  expected: { readonly streamPrefix: string; readonly storeDescription: string },
): SnapshotManifest[] {
  const gap = behind
    .map((b) => `shard ${b.shard} at ${b.position}, stream starts at ${b.firstSeq}`)
    .join('; ');
  const hint =
    'take a snapshot on a node that is up to date (harmonylite -config FILE -save-snapshot), then start this node again';
  if (manifests.length === 0) {
    throw new SnapshotError(
      'ERR_SNAPSHOT_MISSING',
      `the streams discarded messages this node has not applied (${gap}) and ${expected.storeDescription} holds no snapshot to restore`,
      { hint },
    );
  }
  const usable = manifests.filter((m) => unusableReason(m, streams, expected) === undefined);
  if (usable.length === 0) {
    const newest = manifests[0]!;
    throw new SnapshotError(
      'ERR_SNAPSHOT_TOO_OLD',
      `the streams discarded messages this node has not applied (${gap}) and no snapshot reaches them: ` +
        `the newest, ${newest.name}, ${unusableReason(newest, streams, expected)}`,
      { hint },
    );
  }
  return usable;
}
