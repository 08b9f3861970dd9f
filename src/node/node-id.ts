import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';

/**
 * The default `node_id`: derived from the machine id and the database path, so
 * two nodes on one machine (tests, the quick-start cluster) never share an id.
 * Node ids must be unique in a cluster: receivers drop batches by (node, seq).
 */
export function deriveNodeId(dbPath: string): number {
  let machine = hostname();
  for (const f of ['/etc/machine-id', '/var/lib/dbus/machine-id']) {
    try {
      machine = readFileSync(f, 'utf8').trim();
      break;
    } catch {
      // try the next source
    }
  }
  const digest = createHash('sha256').update(machine).update('\0').update(resolve(dbPath)).digest();
  return (digest.readUInt32BE(0) % 0x7fffffff) + 1;
}
