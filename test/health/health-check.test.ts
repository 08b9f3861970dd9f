/**
 * The health decision on a real SQLite file with a scripted node status:
 * capture missing or broken fails, NATS down fails, a shard waiting for a
 * schema degrades, behind fails at once, failing / lagging without progress /
 * publishing nothing fail only after `stallAfterMs`; and the HTTP endpoint
 * maps ok to 200, the rest to 503, with the JSON report when detailed.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { installCapture } from '../../src/cdc/capture-installer.ts';
import { TableFilter } from '../../src/cdc/table-filter.ts';
import { HealthCheck, type HealthReport } from '../../src/health/health-check.ts';
import { HealthServer } from '../../src/health/health-server.ts';
import { silentLogger } from '../../src/logger.ts';
import type { ShardLag } from '../../src/metrics/lag-collector.ts';
import type { NodeStatus } from '../../src/health/node-status.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { httpGet } from '../metrics/prometheus-text.ts';

type Shard = NodeStatus['shards'][number];

function fixture(name: string) {
  const dir = tempDir('hl-health-');
  const dbPath = join(dir.path, `${name}.db`);
  const db = new Database(dbPath);
  db.pragma('journal_mode = WAL');
  db.exec('CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)');
  installCapture(db, new TableFilter([], []), { captureWrites: true });
  let status: NodeStatus = {
    nodeId: 7,
    tables: ['users'],
    schemaHash: '',
    pending: 0,
    natsConnected: true,
    lastPublishAt: 0,
    shards: [
      {
        shard: 1,
        position: 10,
        state: { type: 'running' },
        lastApplyAt: Date.now(),
        duplicatesSkipped: 0,
        deadLetters: 0,
      },
    ],
  };
  const lags = new Map<number, ShardLag>();
  const check = new HealthCheck(
    { nodeId: 7, dbPath, publish: true, status: () => status, lag: (s) => lags.get(s) },
    { stallAfterMs: 300, sampleIntervalMs: 20 },
  );
  check.open();
  return {
    db,
    dbPath,
    check,
    setStatus: (patch: Partial<NodeStatus>) => (status = { ...status, ...patch }),
    setShard: (patch: Partial<Shard>) =>
      (status = { ...status, shards: [{ ...status.shards[0]!, ...patch }] }),
    setLag: (lastSeq: number) =>
      lags.set(1, {
        shard: 1,
        streamLastSeq: lastSeq,
        position: status.shards[0]!.position,
        lagMessages: lastSeq - status.shards[0]!.position,
        lagSeconds: 0,
        checkedAt: Date.now(),
      }),
    [Symbol.dispose]() {
      check.close();
      db.close();
      dir.remove();
    },
  };
}

function reasons(r: HealthReport): string[] {
  return r.failed.map((f) => `${f.check}/${f.severity}: ${f.reason}`);
}

describe('HealthCheck', () => {
  it('is ok with capture installed, NATS up and shards running, and reports the details', () => {
    using f = fixture('ok');
    f.setLag(12);
    const r = f.check.evaluate();
    assert.equal(r.status, 'ok', reasons(r).join('; '));
    assert.equal(r.node_id, 7);
    assert.match(r.version, /^\d+\.\d+\.\d+/);
    assert.deepEqual(r.tables, ['users']);
    assert.equal(r.pending_changes, 0);
    assert.equal(r.last_publish_at, null);
    assert.equal(r.shards[0]?.lag_messages, 2);
    assert.equal(r.shards[0]?.stream_last_seq, 12);
    assert.equal(r.shards[0]?.state, 'running');
  });

  it('fails when NATS is down, and when capture is broken', () => {
    using f = fixture('broken');
    f.setStatus({ natsConnected: false });
    let r = f.check.evaluate();
    assert.equal(r.status, 'unhealthy');
    assert.deepEqual(reasons(r), ['nats/failed: not connected to NATS']);

    f.setStatus({ natsConnected: true });
    f.db.exec('DROP TRIGGER "__harmonylite__users_change_log_on_update"');
    r = f.check.evaluate();
    assert.equal(r.status, 'unhealthy');
    assert.deepEqual(reasons(r), ['capture/failed: table "users" lacks its update trigger']);

    f.db.exec('DROP TABLE "__harmonylite___global_change_log"');
    r = f.check.evaluate();
    assert.match(
      reasons(r)[0]!,
      /^capture\/failed: capture is not installed: missing __harmonylite___global_change_log/,
    );
  });

  it('ignores a table dropped a moment ago (its triggers went with it)', () => {
    using f = fixture('dropped');
    f.db.exec('DROP TABLE users');
    assert.equal(f.check.evaluate().status, 'ok');
  });

  it('degrades while a shard waits for the schema, and fails at once when it is behind', () => {
    using f = fixture('shards');
    f.setShard({
      state: { type: 'waiting-for-schema', seq: 11, reason: 'no such table "items"', since: Date.now() },
    });
    let r = f.check.evaluate();
    assert.equal(r.status, 'degraded');
    assert.match(
      reasons(r)[0]!,
      /^replication\/degraded: shard 1 waits for this node's schema .*no such table "items"/,
    );
    assert.equal(r.shards[0]?.reason, 'no such table "items"');

    f.setShard({ state: { type: 'behind', position: 10, firstSeq: 50 } });
    r = f.check.evaluate();
    assert.equal(r.status, 'unhealthy');
    assert.match(reasons(r)[0]!, /shard 1 is behind the stream.*first kept 50.*restore a snapshot/);
  });

  it("escapes and truncates a reason a message chose (a table name), and shows a shard's duplicates and dead letters", () => {
    using f = fixture('hostile-text');
    const table = `x\u001b[2J\u202eevil\n${'y'.repeat(5000)}`;
    f.setShard({
      state: { type: 'waiting-for-schema', seq: 12, reason: `no such table "${table}"`, since: Date.now() },
      duplicatesSkipped: 3,
      deadLetters: 2,
    });
    const r = f.check.evaluate();
    const shown = [r.shards[0]!.reason!, r.failed[0]!.reason];
    for (const text of shown) {
      // eslint-disable-next-line no-control-regex -- looking for control characters
      assert.ok(!/[\u0000-\u001f\u202e]/.test(text), `no raw control characters: ${text.slice(0, 40)}`);
      assert.ok(text.includes('\\u001b[2J\\u202eevil\\u000a'), text.slice(0, 80));
      assert.ok(text.length < 400, `truncated: ${text.length}`);
    }
    assert.equal(r.shards[0]!.duplicates_skipped, 3);
    assert.equal(r.shards[0]!.dead_letters, 2);
  });

  it('fails a failing shard, a lagging shard without progress and unpublished changes only after stallAfterMs', async () => {
    using f = fixture('stall');
    f.setShard({ state: { type: 'failing', reason: 'disk I/O error' } });
    assert.equal(f.check.evaluate().status, 'ok');
    await waitFor('a failing shard to turn unhealthy', () => f.check.evaluate().status === 'unhealthy');
    assert.match(reasons(f.check.evaluate())[0]!, /shard 1 has failed to apply for \d+ s: disk I\/O error/);

    f.setShard({ state: { type: 'running' } });
    f.setLag(20);
    assert.equal(f.check.evaluate().status, 'ok');
    await waitFor(
      'a shard without progress to turn unhealthy',
      () => f.check.evaluate().status === 'unhealthy',
    );
    assert.match(reasons(f.check.evaluate())[0]!, /shard 1 stalled: 10 messages behind/);
    f.setShard({ position: 20 });
    assert.equal(f.check.evaluate().status, 'ok');

    f.setStatus({ pending: 5, lastPublishAt: Date.now() - 60_000 });
    assert.equal(f.check.evaluate().status, 'ok', 'changes pending a moment ago are not a stall');
    await waitFor('unpublished changes to turn unhealthy', () => f.check.evaluate().status === 'unhealthy');
    assert.match(reasons(f.check.evaluate())[0]!, /publishing stalled: 5 changes pending/);
    f.setStatus({ pending: 0 });
    assert.equal(f.check.evaluate().status, 'ok');
  });

  it('is ok on a read replica (publish = false: capture without triggers)', () => {
    using dir = tempDir('hl-health-replica-');
    const dbPath = join(dir.path, 'replica.db');
    const db = new Database(dbPath);
    try {
      db.pragma('journal_mode = WAL');
      db.exec('CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)');
      installCapture(db, new TableFilter([], []), { captureWrites: false });
      const status: NodeStatus = {
        nodeId: 8,
        tables: ['users'],
        schemaHash: '',
        pending: 0,
        natsConnected: true,
        lastPublishAt: 0,
        shards: [],
      };
      const check = new HealthCheck(
        { nodeId: 8, dbPath, publish: false, status: () => status, lag: () => undefined },
        { stallAfterMs: 300, sampleIntervalMs: 20 },
      );
      const r = check.evaluate();
      check.close();
      assert.equal(r.status, 'ok', reasons(r).join('; '));
    } finally {
      db.close();
    }
  });

  it('fails the database check when the status cannot be read', () => {
    using f = fixture('db');
    const check = new HealthCheck(
      {
        nodeId: 7,
        dbPath: join(f.dbPath, 'missing.db'),
        publish: true,
        status: () => {
          throw new Error('SQLITE_IOERR: disk I/O error');
        },
        lag: () => undefined,
      },
      { stallAfterMs: 300, sampleIntervalMs: 20 },
    );
    const r = check.evaluate();
    check.close();
    assert.equal(r.status, 'unhealthy');
    assert.equal(r.pending_changes, null);
    assert.deepEqual(
      r.failed.map((x) => x.check),
      ['database'],
    );
  });
});

describe('HealthServer', () => {
  const report = (status: HealthReport['status']): HealthReport => ({
    status,
    failed: status === 'ok' ? [] : [{ check: 'nats', severity: 'failed', reason: 'not connected to NATS' }],
    node_id: 1,
    version: '0.0.0',
    uptime_seconds: 1,
    nats_connected: status === 'ok',
    tables: [],
    pending_changes: 0,
    last_publish_at: null,
    last_apply_at: null,
    shards: [],
  });

  it('answers 200 when ok and 503 otherwise, JSON when detailed, one word when not', async () => {
    let status: HealthReport['status'] = 'ok';
    for (const detailed of [true, false]) {
      await using server = new HealthServer({
        bind: '127.0.0.1:0',
        path: '/health',
        detailed,
        evaluate: () => report(status),
        logger: silentLogger(),
      });
      await server.open();
      assert.equal(server.address?.address, '127.0.0.1');
      status = 'ok';
      let res = await httpGet(server.url!);
      assert.equal(res.status, 200);
      if (detailed) assert.equal((JSON.parse(res.body) as HealthReport).status, 'ok');
      else assert.equal(res.body, 'ok\n');
      for (const s of ['degraded', 'unhealthy'] as const) {
        status = s;
        res = await httpGet(server.url!);
        assert.equal(res.status, 503);
        if (detailed) {
          assert.equal(res.type, 'application/json');
          const body = JSON.parse(res.body) as HealthReport;
          assert.equal(body.status, s);
          assert.equal(body.failed[0]?.check, 'nats');
        } else {
          assert.equal(res.body, `${s}\n`);
        }
      }
      const base = server.url!.replace(/\/health$/, '');
      assert.equal((await httpGet(`${base}/metrics`)).status, 404);
      assert.equal((await httpGet(`${base}/healthz`)).status, 404);
    }
  });
});
