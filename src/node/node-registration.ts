import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kvm, type KV, type KvEntry } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../logger.ts';

export interface NodeRegistrationOptions {
  readonly nc: NatsConnection;
  /** `nodeRegistryBucket()` in nats/naming.ts. */
  readonly bucket: string;
  readonly nodeId: number;
  readonly dbPath: string;
  /**
   * Lease lifetime, the bucket's max_age: a registration not renewed for this
   * long disappears. Used when this node creates the bucket; an existing
   * bucket's max_age wins. Default 15 s.
   */
  readonly ttlMs?: number;
  readonly replicas?: number;
  readonly logger: Logger;
  readonly signal?: AbortSignal;
}

/** What a live node writes under its node id. */
export interface NodeRegistrationRecord {
  readonly node_id: number;
  /** Random per process: tells this process's registration from another's. */
  readonly instance: string;
  readonly host: string;
  readonly pid: number;
  /** The kernel's boot id: with `pid`, proves on the same machine that the holder is gone. */
  readonly boot_id: string;
  readonly db_path: string;
  /** ISO time the process registered. */
  readonly since: string;
}

/** Another live process holds this node id. */
export class NodeIdInUseError extends Error {
  override readonly name = 'NodeIdInUseError';
  readonly code = 'ERR_NODE_ID_IN_USE';
  readonly hint: string;
  readonly holder: NodeRegistrationRecord;
  constructor(nodeId: number, holder: NodeRegistrationRecord) {
    super(
      `node id ${nodeId} is in use by another live process: host ${holder.host}, pid ${holder.pid}, ` +
        `database ${holder.db_path}, running since ${holder.since}`,
    );
    this.holder = holder;
    this.hint =
      'give each node its own node_id (or node_id = 0 for the id generated in each database); ' +
      'a copied database file carries its generated id: run -cleanup on the copy to get a new one';
  }
}

const KEY_PREFIX = 'node.';

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return '';
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function parseRecord(e: KvEntry): NodeRegistrationRecord | undefined {
  try {
    const v = JSON.parse(e.string()) as Partial<NodeRegistrationRecord>;
    return typeof v.instance === 'string' && typeof v.host === 'string'
      ? (v as NodeRegistrationRecord)
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * One live process per node id (design.md, invariant 10): receivers drop
 * batches by (origin, shard, seq), so two processes publishing under one id
 * lose each other's changes. At start the node registers its id in a KV
 * bucket whose entries expire (max_age), and renews the entry every TTL/3.
 * - Free id (absent, expired, deleted by a clean stop): `create` wins it.
 * - Held by a process that is provably gone (same boot id, pid not running):
 *   taken over at once, so a node restarted after kill -9 does not wait.
 * - Otherwise the node watches the entry for up to 1.5 TTL: renewed means a
 *   live holder and the start is refused (`NodeIdInUseError`, naming it);
 *   expired means a dead one and the id is taken.
 * - A renewal that finds another instance's entry (this process was frozen
 *   longer than the TTL and another started) is logged as an error on each
 *   attempt; the entry is not overwritten.
 */
export class NodeRegistration {
  readonly #o: NodeRegistrationOptions;
  readonly #record: NodeRegistrationRecord;
  readonly #key: string;
  readonly #abort = new AbortController();
  #kv: KV | undefined;
  #ttlMs: number;
  #revision = 0;
  #loop: Promise<void> | undefined;

  constructor(options: NodeRegistrationOptions) {
    this.#o = options;
    this.#ttlMs = options.ttlMs ?? 15_000;
    this.#key = `${KEY_PREFIX}${options.nodeId}`;
    this.#record = {
      node_id: options.nodeId,
      instance: randomUUID(),
      host: hostname(),
      pid: process.pid,
      boot_id: bootId(),
      db_path: resolve(options.dbPath),
      since: new Date().toISOString(),
    };
  }

  /** The registration lifetime in effect (the bucket's max_age). */
  get ttlMs(): number {
    return this.#ttlMs;
  }

  /** Registers the node id; rejects with `NodeIdInUseError` when another live process holds it. */
  /** Opens the bucket, creating it when missing (first node, or lost with a wiped store). */
  #openBucket(): Promise<KV> {
    return new Kvm(this.#o.nc).create(this.#o.bucket, {
      history: 1,
      ttl: this.#ttlMs,
      replicas: this.#o.replicas ?? 1,
    });
  }

  async open(): Promise<void> {
    const kv = await this.#openBucket();
    const actual = (await kv.status()).ttl;
    if (actual > 0) this.#ttlMs = actual;
    this.#kv = kv;
    this.#revision = await this.#claim(kv);
    this.#o.logger.info({ instance: this.#record.instance, ttl_ms: this.#ttlMs }, 'node id registered');
    this.#loop = this.#renew(this.#abort.signal);
  }

  async close(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
    // Released at once: a restart need not wait for the entry to expire.
    if (this.#revision > 0 && this.#kv !== undefined)
      await this.#kv.delete(this.#key, { previousSeq: this.#revision }).catch(() => undefined);
    this.#revision = 0;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #claim(kv: KV): Promise<number> {
    const { logger, nodeId } = this.#o;
    const value = JSON.stringify(this.#record);
    let watched: { revision: number; holder: NodeRegistrationRecord; since: number } | undefined;
    for (;;) {
      this.#o.signal?.throwIfAborted();
      const e = await kv.get(this.#key);
      if (e === null || e.operation !== 'PUT') {
        try {
          return await kv.create(this.#key, value);
        } catch (err) {
          // Another process created it in between (look at it), or the create itself fails.
          const again = await kv.get(this.#key);
          if (again === null || again.operation !== 'PUT') throw err;
          continue;
        }
      }
      const holder = parseRecord(e) ?? { ...this.#record, instance: '?', host: '?', pid: 0, since: '?' };
      if (holder.boot_id === this.#record.boot_id && holder.boot_id !== '' && !processAlive(holder.pid)) {
        logger.warn(
          { previous: holder },
          'the previous process with this node id is gone (same machine, pid not running); taking its registration over',
        );
        try {
          return await kv.update(this.#key, value, e.revision);
        } catch {
          await sleep(100, undefined, this.#o.signal ? { signal: this.#o.signal } : {});
          continue; // changed in between: look at it again
        }
      }
      if (watched !== undefined && watched.revision !== e.revision)
        throw new NodeIdInUseError(nodeId, holder);
      if (watched === undefined) {
        watched = { revision: e.revision, holder, since: performance.now() };
        logger.warn(
          { holder, wait_ms: Math.round(1.5 * this.#ttlMs) },
          'node id is registered by another process; waiting to see whether it is alive (renews its registration) or gone (it expires)',
        );
      } else if (performance.now() - watched.since > 1.5 * this.#ttlMs) {
        // Not renewed for longer than its lifetime: the server keeps it past max_age only when its
        // clock or expiry lags; the holder is not renewing, so it is not alive.
        logger.warn({ previous: holder }, 'registration not renewed; taking it over');
        try {
          return await kv.update(this.#key, value, e.revision);
        } catch {
          await sleep(100, undefined, this.#o.signal ? { signal: this.#o.signal } : {});
          continue; // changed in between: look at it again
        }
      }
      await sleep(
        Math.max(100, this.#ttlMs / 10),
        undefined,
        this.#o.signal ? { signal: this.#o.signal } : {},
      );
    }
  }

  async #renew(signal: AbortSignal): Promise<void> {
    let kv = this.#kv!;
    const value = JSON.stringify(this.#record);
    while (!signal.aborted) {
      await sleep(this.#ttlMs / 3, undefined, { signal }).catch(() => undefined);
      if (signal.aborted) return;
      try {
        // Renewing after the entry was lost (expired while NATS was unreachable, or the bucket went
        // with a wiped store): the bucket is opened again, created if missing.
        if (this.#revision === 0) this.#kv = kv = await this.#openBucket();
        this.#revision =
          this.#revision > 0
            ? await kv.update(this.#key, value, this.#revision)
            : await kv.create(this.#key, value);
      } catch (err) {
        const e = await kv.get(this.#key).catch(() => null);
        const holder = e !== null && e.operation === 'PUT' ? parseRecord(e) : undefined;
        if (holder !== undefined && holder.instance !== this.#record.instance) {
          this.#revision = 0;
          this.#o.logger.error(
            { holder },
            'another process registered this node id while this one could not renew (frozen or cut off): two processes now publish under one id; stop one of them',
          );
        } else if (e === null || e?.operation !== 'PUT') {
          this.#revision = 0; // expired while NATS was unreachable: registered again next turn
        } else {
          this.#o.logger.warn({ err: String(err) }, 'renewing the node registration failed');
        }
      }
    }
  }
}
