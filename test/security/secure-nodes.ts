/**
 * Shared steps of the security tests: a nats-server started from a given
 * config (auth, TLS), in-process nodes on it, a write that must replicate,
 * a node that must fail to start, and the places a secret must never reach.
 */
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import Database from 'better-sqlite3';
import type { Config } from '../../src/config/config.ts';
import { createLogger, silentLogger } from '../../src/logger.ts';
import { EmbeddedNatsServer, type NatsProbeOptions } from '../../src/nats/embedded-server.ts';
import { HarmonyLiteNode } from '../../src/node/harmonylite-node.ts';
import {
  appConnection,
  createDatabase,
  LogCapture,
  nodeConfig,
  startNode,
  type TestNode,
} from '../helpers/node-harness.ts';
import { waitFor } from '../helpers/wait-for.ts';

export const SCHEMA = 'CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);';

let servers = 0;

/** A nats-server on a free loopback port with `extraConfig`; `probe` lets its readiness check authenticate. */
export async function startSecureServer(
  storeDir: string,
  extraConfig: string,
  probe: NatsProbeOptions,
): Promise<EmbeddedNatsServer> {
  const server = new EmbeddedNatsServer({
    storeDir,
    serverName: `secure-${process.pid}-${++servers}`,
    logger: silentLogger(),
    extraConfig,
    probe,
  });
  try {
    await server.open();
  } catch (err) {
    await server.close();
    throw err;
  }
  return server;
}

/** Two nodes on `url`, configured by `configure`, verbose logs captured. */
export async function startPair(
  dir: string,
  urls: readonly string[],
  configure: (c: Config) => void,
): Promise<[TestNode, TestNode]> {
  const a = await startNode({ dir, nodeId: 1, urls, schema: SCHEMA, configure, verbose: true });
  try {
    const b = await startNode({ dir, nodeId: 2, urls, schema: SCHEMA, configure, verbose: true });
    return [a, b];
  } catch (err) {
    await a.close();
    throw err;
  }
}

/** A row written by an application on `from` arrives on `to`. */
export async function assertReplicates(from: TestNode, to: TestNode, id: number): Promise<void> {
  const app = appConnection(from.dbPath);
  try {
    app.prepare('INSERT INTO notes (id, body) VALUES (?, ?)').run(id, `note ${id}`);
  } finally {
    app.close();
  }
  await waitFor(
    `note ${id} on node ${to.config.node_id}`,
    () => {
      const db = new Database(to.dbPath, { readonly: true });
      try {
        return db.prepare('SELECT body FROM notes WHERE id = ?').pluck().get(id) === `note ${id}`;
      } finally {
        db.close();
      }
    },
    { timeoutMs: 20_000, seen: () => to.logs.messages().slice(-5) },
  );
}

export interface FailedStart {
  readonly error: Error & { code?: string; cause?: unknown };
  readonly ms: number;
  readonly logs: LogCapture;
}

/** Opens a node that must fail; returns the error, how long it took, and what it logged. */
export async function failingNode(
  dir: string,
  nodeId: number,
  urls: readonly string[],
  configure: (c: Config) => void,
): Promise<FailedStart> {
  const config = nodeConfig({ dir, nodeId, urls, configure });
  createDatabase(config.db_path, SCHEMA);
  const logs = new LogCapture();
  const logger = createLogger({ verbose: true, format: 'json', nodeId, destination: logs });
  const node = new HarmonyLiteNode({ config, logger });
  const started = Date.now();
  try {
    await node.open();
  } catch (err) {
    return { error: err as FailedStart['error'], ms: Date.now() - started, logs };
  } finally {
    await node.close();
  }
  assert.fail(`node ${nodeId} started with wrong credentials`);
}

/** Everything a secret could leak into, by place: logs, metrics, status, and an error with its causes. */
export async function exposedText(
  node: TestNode | undefined,
  error?: unknown,
  logs?: LogCapture,
): Promise<Record<string, string>> {
  const parts: Record<string, string> = {};
  if (node !== undefined) {
    parts.logs = node.logs.records.map((r) => JSON.stringify(r)).join('\n');
    parts.metrics = await node.node.metrics.registry.metrics();
    parts.status = JSON.stringify(node.node.status());
  }
  if (logs !== undefined) parts.logs = logs.records.map((r) => JSON.stringify(r)).join('\n');
  if (error !== undefined) {
    const chain: string[] = [inspect(error, { depth: 8 })];
    for (let e: unknown = error; e instanceof Error; e = e.cause) chain.push(e.message, e.stack ?? '');
    parts.error = chain.join('\n');
  }
  return parts;
}

/** Fails naming the secret's label and the place (never printing the secret itself). */
export function assertNoSecret(
  parts: Readonly<Record<string, string>>,
  secrets: Readonly<Record<string, string>>,
  where: string,
): void {
  for (const [label, value] of Object.entries(secrets)) {
    if (value === '') continue;
    for (const [place, text] of Object.entries(parts)) {
      if (!text.includes(value)) continue;
      const line = text.split('\n').find((l) => l.includes(value)) ?? '';
      const context = line.replaceAll(value, '<SECRET>').slice(0, 300);
      assert.fail(`the ${label} appears in the ${place} of ${where}: ${context}`);
    }
  }
}
