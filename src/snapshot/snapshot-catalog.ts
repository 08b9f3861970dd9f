/**
 * Snapshot policy as free functions over any `SnapshotStore`: upload order,
 * which snapshots are restorable, retention. Backends know nothing of it.
 */
import type { SnapshotObjectInfo, SnapshotStore } from './snapshot-store.ts';
import {
  decodeManifest,
  encodeManifest,
  manifestObjectName,
  parseSnapshotObjectName,
  type SnapshotManifest,
} from './snapshot-manifest.ts';
import { errorMessage } from '../error-message.ts';

/**
 * Uploads a snapshot atomically: the data object first, the manifest last
 * (`publishManifest`). Readers look for manifests only, so they see the
 * previous snapshots until the new one is complete; a crash or abort in
 * between leaves at most a data object without manifest, which is never
 * restored and is pruned later.
 */
export async function uploadSnapshot(
  store: SnapshotStore,
  snapshot: { readonly manifest: SnapshotManifest; readonly uploadPath: string },
  options: { signal?: AbortSignal | undefined; onProgress?: ((bytes: number) => void) | undefined } = {},
): Promise<void> {
  const { manifest } = snapshot;
  await store.putFile(manifest.dataObject, snapshot.uploadPath, {
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  await publishManifest(store, manifest, options.signal);
}

/** The last step of an upload: only call it once `manifest.dataObject` is stored completely. */
export async function publishManifest(
  store: SnapshotStore,
  manifest: SnapshotManifest,
  signal?: AbortSignal,
): Promise<void> {
  await store.putBytes(manifestObjectName(manifest.name), encodeManifest(manifest), signal);
}

export interface ListSnapshotsOptions {
  readonly signal?: AbortSignal | undefined;
  /** A manifest that cannot be read or is invalid, or whose data object is missing: skipped, reported here. */
  readonly onSkipped?: (objectName: string, reason: string) => void;
}

/**
 * The restorable snapshots, newest first: valid manifests whose data object is
 * stored with the size the manifest records.
 */
export async function listSnapshots(
  store: SnapshotStore,
  options: ListSnapshotsOptions = {},
): Promise<SnapshotManifest[]> {
  const objects = await store.list(options.signal);
  const sizes = new Map(objects.map((o) => [o.name, o.size]));
  const manifests: SnapshotManifest[] = [];
  for (const o of objects) {
    if (parseSnapshotObjectName(o.name)?.kind !== 'manifest') continue;
    const bytes = await store.getBytes(o.name, options.signal);
    if (bytes === undefined) continue; // pruned since the listing
    let manifest: SnapshotManifest;
    try {
      manifest = decodeManifest(bytes, o.name);
    } catch (err) {
      options.onSkipped?.(o.name, errorMessage(err));
      continue;
    }
    const size = sizes.get(manifest.dataObject);
    if (size !== manifest.dataBytes) {
      options.onSkipped?.(
        o.name,
        size === undefined
          ? `its data object ${manifest.dataObject} is missing`
          : `its data object ${manifest.dataObject} has ${size} bytes, the manifest says ${manifest.dataBytes}`,
      );
      continue;
    }
    manifests.push(manifest);
  }
  return manifests.sort(newestFirst);
}

function newestFirst(a: SnapshotManifest, b: SnapshotManifest): number {
  return b.createdAt - a.createdAt || b.nodeId - a.nodeId;
}

export interface PruneOptions {
  readonly signal?: AbortSignal | undefined;
  /**
   * A data object without manifest that is older than the newest manifest is a
   * crashed upload, unless it is younger than this (its manifest may be on its
   * way). Default 60 s.
   */
  readonly orphanGraceMs?: number;
}

/**
 * Keeps the newest `keep` snapshots (by the time in their names): deletes the
 * older manifests first, then their data, so a reader never finds a manifest
 * whose data is gone. Also deletes data objects left by crashed uploads.
 * Returns the deleted object names.
 */
export async function pruneSnapshots(
  store: SnapshotStore,
  keep: number,
  options: PruneOptions = {},
): Promise<string[]> {
  const { signal } = options;
  const graceMs = options.orphanGraceMs ?? 60_000;
  const objects = await store.list(signal);
  const groups = new Map<
    string,
    { createdAt: number; manifest?: SnapshotObjectInfo; data: SnapshotObjectInfo[] }
  >();
  for (const o of objects) {
    const parsed = parseSnapshotObjectName(o.name);
    if (parsed === undefined) continue;
    let g = groups.get(parsed.baseName);
    if (g === undefined) {
      g = { createdAt: parsed.createdAt, data: [] };
      groups.set(parsed.baseName, g);
    }
    if (parsed.kind === 'manifest') g.manifest = o;
    else g.data.push(o);
  }
  const withManifest = [...groups.entries()]
    .filter(([, g]) => g.manifest !== undefined)
    .sort(([a, ga], [b, gb]) => gb.createdAt - ga.createdAt || (a < b ? 1 : -1));
  const newest = withManifest[0]?.[1].createdAt;
  const old = withManifest.slice(Math.max(1, keep));
  const deleted: string[] = [];
  const remove = async (name: string) => {
    await store.delete(name, signal);
    deleted.push(name);
  };
  for (const [, g] of old) await remove(g.manifest!.name);
  for (const [, g] of old) for (const d of g.data) await remove(d.name);
  if (newest !== undefined) {
    const now = Date.now();
    for (const g of groups.values()) {
      if (g.manifest !== undefined || g.createdAt >= newest) continue;
      for (const d of g.data) if (now - d.modified.getTime() >= graceMs) await remove(d.name);
    }
  }
  return deleted;
}
