/**
 * HarmonyLite's examples/run-cluster.sh, in its shape: the Books databases made
 * by the stock sqlite3 shell, three nodes started from the repository root with
 * `-config examples/node-N-config.toml -node-id N -cluster-addr localhost:P
 * -cluster-peers 'nats://localhost:Q/,nats://localhost:R/'`, each config naming
 * its nats-server config by a path relative to the working directory, then
 * stopped with SIGTERM. The files are upstream's (test/fixtures), with only
 * /tmp paths and fixed ports replaced so tests can run side by side.
 */
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { UPSTREAM_FILES } from '../fixtures/upstream-harmonylite-files.ts';
import { spawnCli, type CliNode } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { freePorts } from '../replication/fault-helpers.ts';

/** create_db() of run-cluster.sh, verbatim. */
const CREATE_DB = `DROP TABLE IF EXISTS Books;
CREATE TABLE Books (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    author TEXT NOT NULL,
    publication_year INTEGER
);
INSERT INTO Books (title, author, publication_year)
VALUES
('The Hitchhiker''s Guide to the Galaxy', 'Douglas Adams', 1979),
('The Lord of the Rings', 'J.R.R. Tolkien', 1954),
('Harry Potter and the Sorcerer''s Stone', 'J.K. Rowling', 1997),
('The Catcher in the Rye', 'J.D. Salinger', 1951),
('To Kill a Mockingbird', 'Harper Lee', 1960),
('1984', 'George Orwell', 1949),
('The Great Gatsby', 'F. Scott Fitzgerald', 1925);
`;

function upstream(name: string): string {
  const text = UPSTREAM_FILES[name];
  assert.ok(text !== undefined, name);
  return text;
}

function titles(db: string): string[] {
  const c = new Database(db, { readonly: true });
  try {
    return c.prepare('SELECT title FROM Books ORDER BY id').pluck().all() as string[];
  } finally {
    c.close();
  }
}

describe("HarmonyLite's examples/run-cluster.sh", () => {
  it('starts three nodes from the example configs, which replicate, and stop on SIGTERM', async () => {
    using dir = tempDir();
    const root = dir.path;
    const tmp = join(root, 'tmp');
    mkdirSync(join(root, 'examples'), { recursive: true });
    mkdirSync(tmp);
    const ports = await freePorts(13);
    const port = (i: number): number => ports[i] ?? assert.fail('ports');
    const ids = [1, 2, 3] as const;
    for (const id of ids) {
      const node = upstream(`examples/node-${id}-config.toml`)
        .replaceAll('/tmp/', `${tmp}/`)
        .replace(/bind = "0\.0\.0\.0:3\d+"/, `bind = "127.0.0.1:${port(id)}"`)
        .replace('bind = "0.0.0.0:8090"', `bind = "127.0.0.1:${port(3 + id)}"`);
      writeFileSync(join(root, `examples/node-${id}-config.toml`), node);
      const server = upstream(`examples/nats-server-${id}.conf`)
        .replaceAll('/tmp/', `${tmp}/`)
        .replace(/monitor_port = \d+/, `monitor_port = ${port(6 + id)}`);
      writeFileSync(join(root, `examples/nats-server-${id}.conf`), server);
      execFileSync('sqlite3', [join(tmp, `harmonylite-${id}.db`)], { input: CREATE_DB });
    }
    const route = (id: number): number => port(9 + id);
    const clis: CliNode[] = [];
    try {
      for (const id of ids) {
        const peers = ids.filter((p) => p !== id).map((p) => `nats://localhost:${route(p)}/`);
        clis.push(
          spawnCli(
            [
              '-config',
              `examples/node-${id}-config.toml`,
              '-node-id',
              String(id),
              '-cluster-addr',
              `localhost:${route(id)}`,
              '-cluster-peers',
              peers.join(','),
            ],
            { cwd: root },
          ),
        );
      }
      await Promise.all(clis.map((c) => c.waitForOutput(/HarmonyLite node started/, 90_000)));
      const dbs = ids.map((id) => join(tmp, `harmonylite-${id}.db`));
      const shell = (db: string, sql: string) => execFileSync('sqlite3', ['-cmd', '.timeout 5000', db, sql]);
      shell(
        dbs[0]!,
        "INSERT INTO Books (title, author, publication_year) VALUES ('Dune', 'Frank Herbert', 1965)",
      );
      shell(dbs[2]!, "UPDATE Books SET publication_year = 1950 WHERE title = '1984'");
      for (const db of dbs) {
        await waitFor(
          `${db} to hold the rows written on nodes 1 and 3`,
          () => {
            const c = new Database(db, { readonly: true });
            try {
              const year = c.prepare("SELECT publication_year FROM Books WHERE title = '1984'").pluck().get();
              return titles(db).includes('Dune') && year === 1950;
            } finally {
              c.close();
            }
          },
          { timeoutMs: 60_000 },
        );
      }
      assert.deepEqual(titles(dbs[1]!), titles(dbs[0]!));
      assert.equal(titles(dbs[1]!).length, 8);
      // The cleanup of run-cluster.sh: kill (SIGTERM).
      for (const c of clis) c.kill('SIGTERM');
      assert.deepEqual(await Promise.all(clis.map((c) => c.exited)), [0, 0, 0]);
    } finally {
      for (const c of clis) if (c.child.exitCode === null && c.child.signalCode === null) c.kill('SIGKILL');
    }
  });
});
