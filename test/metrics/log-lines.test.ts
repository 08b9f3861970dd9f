/**
 * The log as operators read it: the seed's messages as written ("Unable to
 * publish", "Cleaned up DB change logs"); `json` is one object per line; every
 * line carries the node id, also the CLI's when the id is derived; secrets of
 * the config (NATS password and token, S3 secret and session token, a
 * password inside a NATS URL) never appear in any line, even at debug level
 * through a NATS outage.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/logger.ts';
import { HarmonyLiteNode } from '../../src/node/harmonylite-node.ts';
import { resolveNodeId } from '../../src/node/node-id.ts';
import {
  appConnection,
  createDatabase,
  nodeConfig,
  spawnCli,
  writeConfigFile,
} from '../helpers/node-harness.ts';
import { startNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';

/** Raw log lines, as a log shipper would read them. */
class RawLines extends Writable {
  readonly lines: string[] = [];
  #partial = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    const parts = (this.#partial + chunk.toString('utf8')).split('\n');
    this.#partial = parts.pop() ?? '';
    this.lines.push(...parts);
    cb();
  }
  records(): Record<string, unknown>[] {
    return this.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  }
  has(msg: string): boolean {
    return this.records().some((r) => String(r.msg).startsWith(msg));
  }
}

const SECRETS = {
  natsPassword: 'pw-Zq81-SECRET',
  natsToken: 'tok-Hn27-SECRET',
  s3Secret: 's3-Wm93-SECRET',
  s3Session: 'sess-Rt46-SECRET',
};
const URL_PASSWORD = 'url-Kp55-SECRET';

/** Lines of one node run, shared by the assertions below. */
let out: RawLines;

before(async () => {
  using dir = tempDir('hl-log-lines-');
  await using nats = await startNatsServer();
  const config = nodeConfig({ dir: dir.path, nodeId: 5, urls: [] });
  // The test server has no authorization: it accepts (and ignores) any credentials.
  config.nats.urls = [nats.url.replace('nats://', `nats://operator:${URL_PASSWORD}@`)];
  config.nats.user_name = 'operator';
  config.nats.user_password = SECRETS.natsPassword;
  config.nats.token = SECRETS.natsToken;
  config.nats.publish_timeout = 300;
  config.nats.reconnect_wait_seconds = 0.2;
  config.snapshot.s3.access_key = 'AKIA-not-secret';
  config.snapshot.s3.secret = SECRETS.s3Secret;
  config.snapshot.s3.session_token = SECRETS.s3Session;
  config.cleanup_interval = 200;
  // Publishing only: the outage below is about what the node logs, not about replay across a restart.
  config.replicate = false;
  createDatabase(config.db_path, 'CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)');
  out = new RawLines();
  const logger = createLogger({ verbose: true, format: 'json', nodeId: 5, destination: out });
  // What a careless future line would do.
  logger.debug({ config }, 'test: the whole config');
  logger.debug({ nats: config.nats, s3: config.snapshot.s3 }, 'test: config sections');
  const node = new HarmonyLiteNode({ config, logger });
  await node.open();
  const app = appConnection(config.db_path);
  try {
    app.prepare("INSERT INTO notes (id, body) VALUES (1, 'one')").run();
    await waitFor(
      'the first change published',
      () => node.status().pending === 0 && node.status().lastPublishAt > 0,
    );
    await waitFor('"Cleaned up DB change logs"', () => out.has('Cleaned up DB change logs'), {
      seen: () => out.lines.slice(-5),
    });
    // NATS goes away while changes wait: the publisher says "Unable to publish" and retries.
    nats.kill('SIGKILL');
    app.prepare("INSERT INTO notes (id, body) VALUES (2, 'two')").run();
    await waitFor('"Unable to publish"', () => out.has('Unable to publish'), {
      seen: () => out.lines.slice(-5),
    });
    await nats.restart();
    await waitFor('the change published after NATS returned', () => node.status().pending === 0, {
      timeoutMs: 30_000,
    });
  } finally {
    app.close();
    await node.close();
  }
});

test('the seed messages appear as written', () => {
  const msgs = out.records().map((r) => String(r.msg));
  assert.ok(msgs.includes('Unable to publish'), 'exactly "Unable to publish"');
  assert.ok(msgs.includes('Cleaned up DB change logs'), 'exactly "Cleaned up DB change logs"');
});

test('json is one object per line and every line carries node_id', () => {
  assert.ok(out.lines.length >= 6, `only ${out.lines.length} lines`);
  for (const line of out.lines) {
    const rec = JSON.parse(line) as unknown;
    assert.ok(typeof rec === 'object' && rec !== null && !Array.isArray(rec), `not one object: ${line}`);
    assert.equal((rec as Record<string, unknown>).node_id, 5, `no node_id: ${line}`);
  }
});

test('no secret of a config field appears in any line the node writes', () => {
  for (const line of out.lines.filter((l) => !l.includes('"msg":"test: '))) {
    for (const [what, secret] of Object.entries(SECRETS))
      assert.ok(!line.includes(secret), `${what} leaked in: ${line}`);
  }
});

test('no secret anywhere: not in a NATS URL, not in a nested object; no key twice in a line', () => {
  for (const line of out.lines) {
    for (const [what, secret] of Object.entries({ ...SECRETS, urlPassword: URL_PASSWORD }))
      assert.ok(!line.includes(secret), `${what} leaked in: ${line}`);
    assert.equal(duplicateKey(line), undefined, `a key twice in one object of: ${line}`);
  }
});

test('the CLI logs the stored node id on every line when node_id is 0', async () => {
  using dir = tempDir('hl-log-cli-');
  const config = nodeConfig({ dir: dir.path, nodeId: 1, urls: [] });
  config.node_id = 0;
  createDatabase(config.db_path, 'CREATE TABLE notes (id INTEGER PRIMARY KEY)');
  // Generated and stored as at a node's first start.
  const expected = resolveNodeId(0, config.db_path, { busyTimeoutMs: 1000, create: true });
  const path = writeConfigFile(config, join(dir.path, 'config.toml'));
  const cli = spawnCli(['-config', path, '-cleanup']);
  assert.equal(await cli.exited, 0, cli.output.join('\n'));
  assert.ok(cli.output.length > 0);
  for (const line of cli.output) {
    const rec = JSON.parse(line) as Record<string, unknown>;
    assert.equal(rec.node_id, expected, line);
  }
});

/** The first key that appears twice in the same JSON object of `line` (JSON.parse would hide it). */
function duplicateKey(line: string): string | undefined {
  const objects: Set<string>[] = [];
  const containers: string[] = [];
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (ch === '{' || ch === '[') {
      containers.push(ch);
      if (ch === '{') objects.push(new Set());
    } else if (ch === '}' || ch === ']') {
      if (containers.pop() === '{') objects.pop();
    } else if (ch === '"') {
      let j = i + 1;
      while (line[j] !== '"') j += line[j] === '\\' ? 2 : 1;
      if (containers[containers.length - 1] === '{' && line[j + 1] === ':') {
        const key = line.slice(i + 1, j);
        const keys = objects[objects.length - 1]!;
        if (keys.has(key)) return key;
        keys.add(key);
      }
      i = j;
    }
  }
  return undefined;
}
