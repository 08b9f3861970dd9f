/**
 * Known nats-server defects that put this daemon's data at risk, by server
 * version, so a node can warn about them at start. Pure.
 */

/** "2.9.10" → [2, 9, 10]; undefined for anything else. */
function parseVersion(version: string | undefined): [number, number, number] | undefined {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version ?? '');
  return m === null ? undefined : [Number(m[1]), Number(m[2]), Number(m[3])];
}

function below(v: [number, number, number], than: [number, number, number]): boolean {
  for (let i = 0; i < 3; i++) if (v[i] !== than[i]) return v[i]! < than[i]!;
  return false;
}

/**
 * nats-io/nats-server#4196 (fixed in 2.9.18): on a replicated (R > 1) stream a
 * partial purge is replayed as a full purge after a server restart. The object
 * store purges its chunk subjects whenever a snapshot is replaced or pruned, so
 * with `[snapshot.nats] replicas` > 1 a restart can erase every snapshot on one
 * replica (reproduced here on 2.9.10 by the chaos suite's author).
 */
export function objectStorePurgeDefect(
  serverVersion: string | undefined,
  replicas: number,
): string | undefined {
  const v = parseVersion(serverVersion);
  if (replicas <= 1 || v === undefined || !below(v, [2, 9, 18])) return undefined;
  return (
    `nats-server ${serverVersion} replays a partial purge of a replicated stream as a full purge after a restart ` +
    '(nats-io/nats-server#4196, fixed in 2.9.18): with [snapshot.nats] replicas > 1 a server restart can erase ' +
    'the snapshots on one replica; upgrade nats-server or use replicas = 1'
  );
}
