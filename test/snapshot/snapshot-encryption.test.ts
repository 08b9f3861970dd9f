/**
 * Snapshot encryption at rest: `[snapshot] encryption_key_file`.
 * Files: a snapshot made with a key round-trips through verification, and
 * every damage or key mismatch is refused with a clear error. End to end:
 * nodes on a real nats-server whose streams roll over while the leader keeps
 * encrypted snapshots in a local store; a new node with the same key restores
 * one, and every other key situation leaves the new node's database untouched.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { createLogger } from '../../src/logger.ts';
import { HarmonyLiteNode } from '../../src/node/harmonylite-node.ts';
import { CIPHER_HEADER_BYTES, DEFAULT_CHUNK_BYTES } from '../../src/snapshot/snapshot-cipher.ts';
import { uploadSnapshot } from '../../src/snapshot/snapshot-catalog.ts';
import { createSnapshotFile, type CreatedSnapshot } from '../../src/snapshot/snapshot-creator.ts';
import { SnapshotError } from '../../src/snapshot/snapshot-error.ts';
import { SnapshotKey, snapshotKeyMismatch } from '../../src/snapshot/snapshot-key.ts';
import {
  decodeManifest,
  encodeManifest,
  encryptionContext,
  manifestObjectName,
  parseSnapshotObjectName,
  type SnapshotManifest,
} from '../../src/snapshot/snapshot-manifest.ts';
import { runVerifyTask, type VerifyTask } from '../../src/snapshot/snapshot-tasks.ts';
import { LocalSnapshotStore } from '../../src/snapshot/stores/local-store.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import {
  createDatabase,
  LogCapture,
  nodeConfig,
  startNode,
  tableContents,
  waitConverged,
  type TestNode,
} from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import {
  capturedDatabase,
  count,
  SCHEMA,
  setPositions,
  smallStreams,
  streamRanges,
  waitForRolloverAndSnapshot,
  writeRows,
} from './snapshot-test-kit.ts';

const root = tempDir('hl-encrypt-');
after(() => root.remove());
let n = 0;

/** A private key file holding a fresh key as hex, as `openssl rand -hex 32` writes it. */
function newKeyFile(name: string): { path: string; key: SnapshotKey } {
  const path = join(root.path, `${name}-${++n}.key`);
  writeFileSync(path, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  return { path, key: SnapshotKey.load(path) };
}

const MARKER = 'TOP-SECRET-PAYLOAD';

describe('encrypted snapshot files', () => {
  const k1 = newKeyFile('k1');
  const k2 = newKeyFile('k2');

  function fixture(): { dir: string; db: string } {
    const dir = join(root.path, `file-${++n}`);
    mkdirSync(join(dir, 'tmp'), { recursive: true });
    const db = join(dir, 'app.db');
    capturedDatabase(db, 400, { blobBytes: 600 }); // ~300 KB: several cipher chunks
    setPositions(db, { 1: 40, 2: 17 }, [[7, 1, 12]]);
    return { dir, db };
  }

  async function create(
    f: { dir: string; db: string },
    compress: boolean,
    key: SnapshotKey | undefined,
  ): Promise<CreatedSnapshot> {
    return createSnapshotFile({
      dbPath: f.db,
      busyTimeoutMs: 1000,
      nodeId: 7,
      streamPrefix: 'p',
      shards: 2,
      compress,
      encryptionKey: key,
      tempParent: join(f.dir, 'tmp'),
    });
  }

  /** The verify task a restoring node runs on a download of `created`, with `key`. */
  async function verify(
    f: { dir: string },
    created: CreatedSnapshot,
    key: SnapshotKey,
    change: (bytes: Buffer) => Buffer = (b) => b,
    manifest: SnapshotManifest = created.manifest,
  ): Promise<{ out: string; result: Promise<unknown> }> {
    const downloaded = join(f.dir, `download-${++n}`);
    writeFileSync(downloaded, change(readFileSync(created.uploadPath)));
    const out = join(f.dir, `restored-${n}.db`);
    const task: VerifyTask = {
      kind: 'verify',
      downloadedPath: downloaded,
      outPath: out,
      compressed: manifest.compressed,
      encryption: { key: key.bytes, context: encryptionContext(manifest) },
      expected: { checksum: manifest.checksum, sizeBytes: manifest.sizeBytes },
      expectedFacts: { positions: manifest.positions, originSeqs: manifest.originSeqs },
      objectName: manifest.dataObject,
    };
    return { out, result: runVerifyTask(task) };
  }

  async function refusedWith(
    r: { out: string; result: Promise<unknown> },
    code: string,
    pattern: RegExp,
  ): Promise<void> {
    await assert.rejects(r.result, (err) => {
      assert.ok(err instanceof SnapshotError, String(err));
      assert.equal(err.code, code);
      assert.match(err.message, pattern);
      return true;
    });
    assert.equal(existsSync(r.out), false, 'no partial output left');
  }

  for (const compress of [true, false]) {
    it(`round-trips (compress = ${compress}); the stored bytes hide the data and the schema`, async () => {
      const f = fixture();
      await using created = await create(f, compress, k1.key);
      const m = created.manifest;
      assert.equal(m.dataObject, `${m.name}${compress ? '.db.zst.enc' : '.db.enc'}`);
      assert.deepEqual(m.encryption, { cipher: 'aes-256-gcm-chunked-v1', keyId: k1.key.id });
      assert.equal(m.schemaSql, '', 'no schema in the readable manifest');
      const stored = readFileSync(created.uploadPath);
      assert.equal(stored.length, m.dataBytes);
      assert.equal(stored.subarray(0, 8).toString('latin1'), 'HLTS-ENC');
      assert.ok(!stored.includes('item-1'), 'row values are not readable in the stored bytes');
      assert.ok(!stored.includes('CREATE TABLE'), 'the schema is not readable in the stored bytes');

      const r = await verify(f, created, k1.key);
      await r.result;
      assert.equal(count(r.out, 'SELECT count(*) FROM items'), 400);
      assert.equal(count(r.out, "SELECT count(*) FROM items WHERE name = 'item-1'"), 1);
    });
  }

  it('the same data unencrypted does hold the plain strings (the check above has teeth)', async () => {
    const f = fixture();
    // Uncompressed: whether a compressed file shows a literal depends on zstd's settings.
    await using plain = await create(f, false, undefined);
    assert.ok(readFileSync(plain.uploadPath).includes('item-1'));
    assert.ok(readFileSync(plain.uploadPath).includes('CREATE TABLE'));
    assert.equal(plain.manifest.encryption, undefined);
    assert.match(plain.manifest.schemaSql, /^CREATE TABLE items/);
  });

  it('refuses a changed byte, a file cut short and a manifest that does not match the data', async () => {
    const f = fixture();
    await using created = await create(f, true, k1.key);
    const stored = readFileSync(created.uploadPath);
    assert.ok(stored.length > CIPHER_HEADER_BYTES + 2 * (DEFAULT_CHUNK_BYTES + 16), 'several chunks');
    await refusedWith(
      await verify(f, created, k1.key, (b) => {
        b[Math.floor(b.length / 2)]! ^= 0x04;
        return b;
      }),
      'ERR_SNAPSHOT_CORRUPT',
      /^snapshot \S+\.db\.zst\.enc is damaged: cannot decrypt: chunk \d+ fails authentication/,
    );
    await refusedWith(
      await verify(f, created, k1.key, (b) => b.subarray(0, CIPHER_HEADER_BYTES + DEFAULT_CHUNK_BYTES + 16)),
      'ERR_SNAPSHOT_CORRUPT',
      /cannot decrypt: the last chunk \(0\) fails authentication: the file was cut short, extended or changed/,
    );
    await refusedWith(
      await verify(f, created, k1.key, (b) => b.subarray(0, b.length - 100)),
      'ERR_SNAPSHOT_CORRUPT',
      /cannot decrypt: .*(cut short|ends inside chunk)/,
    );
    // The manifest is readable by anyone with access to the store: what it says must match the data.
    const forged = {
      ...created.manifest,
      originSeqs: [...created.manifest.originSeqs, { origin: 9, shard: 1, seq: 99 }],
    };
    await refusedWith(
      await verify(f, created, k1.key, undefined, forged),
      'ERR_SNAPSHOT_CORRUPT',
      /its stream positions differ from its manifest's \(the manifest was changed\)/,
    );
    // A data object moved under another snapshot's name.
    const renamed = { ...created.manifest, name: 'snapshot-1700000000999-7' };
    await refusedWith(
      await verify(f, created, k1.key, undefined, renamed),
      'ERR_SNAPSHOT_CORRUPT',
      /cannot decrypt: chunk 0 fails authentication/,
    );
  });

  it('refuses another key with both key ids, before and while decrypting', async () => {
    const f = fixture();
    await using created = await create(f, true, k1.key);
    const m = created.manifest;
    await refusedWith(
      await verify(f, created, k2.key),
      'ERR_SNAPSHOT_KEY',
      new RegExp(
        `^snapshot ${m.dataObject} was encrypted with key id ${k1.key.id}, the configured key is ${k2.key.id}$`,
      ),
    );
    const wrong = snapshotKeyMismatch(m, k2.key);
    assert.equal(wrong?.code, 'ERR_SNAPSHOT_KEY');
    assert.match(
      wrong!.message,
      new RegExp(
        `^snapshot ${m.dataObject} was encrypted with key id ${k1.key.id}, the configured key is ${k2.key.id} \\(.*\\)$`,
      ),
    );
    assert.match(wrong!.hint!, new RegExp(`key with id ${k1.key.id}`));
    assert.equal(snapshotKeyMismatch(m, k1.key), undefined);
    assert.match(
      snapshotKeyMismatch(m, undefined)!.message,
      new RegExp(`is encrypted \\(key id ${k1.key.id}\\), but no snapshot.encryption_key_file is configured`),
    );
    await using plain = await create(fixture(), true, undefined);
    assert.equal(snapshotKeyMismatch(plain.manifest, undefined), undefined);
    assert.match(
      snapshotKeyMismatch(plain.manifest, k1.key)!.message,
      /is not encrypted, but snapshot.encryption_key_file is set .*; an unencrypted snapshot is refused/,
    );
  });

  it('records the encryption in the manifest, which names and validates it', async () => {
    const f = fixture();
    await using created = await create(f, false, k1.key);
    const m = created.manifest;
    const object = manifestObjectName(m.name);
    assert.deepEqual(decodeManifest(encodeManifest(m), object), m);
    assert.equal(parseSnapshotObjectName(`${m.name}.db.enc`)?.kind, 'data');
    assert.equal(
      parseSnapshotObjectName(`${m.name}.db.zst.enc`)?.kind,
      'data',
      'pruned like any data object',
    );
    const bad = (changed: object, pattern: RegExp) =>
      assert.throws(
        () => decodeManifest(new TextEncoder().encode(JSON.stringify({ ...m, ...changed })), object),
        pattern,
      );
    bad({ encryption: { cipher: 'rot13', keyId: k1.key.id } }, /encryption.cipher "rot13" is not supported/);
    bad({ encryption: { cipher: 'aes-256-gcm-chunked-v1', keyId: 'xyz' } }, /keyId must be 16 lowercase hex/);
    bad({ encryption: undefined }, /dataObject ".*\.db\.enc" should be .*\.db$/);
  });

  it('accepts the key as hex, base64 or 32 raw bytes, all with the same id', () => {
    const bytes = randomBytes(32);
    const write = (name: string, content: string | Buffer) => {
      const path = join(root.path, `${name}-${++n}.key`);
      writeFileSync(path, content, { mode: 0o400 });
      return SnapshotKey.load(path);
    };
    bytes[0] = 0; // never all printable
    const ids = [
      write('hex', `${bytes.toString('hex')}\n`),
      write('hex-upper', bytes.toString('hex').toUpperCase()),
      write('b64', `${bytes.toString('base64')}\r\n`),
      write('b64url', bytes.toString('base64url')),
      write('raw', bytes),
    ].map((k) => k.id);
    assert.deepEqual(new Set(ids).size, 1);
    const key = SnapshotKey.load(k1.path);
    assert.doesNotMatch(JSON.stringify({ key }), new RegExp(Buffer.from(key.bytes).toString('hex')));
  });
});

describe('encrypted snapshots end to end', () => {
  const dir = join(root.path, 'cluster');
  const storeDir = join(dir, 'snapshots');
  const k1 = newKeyFile('cluster-k1');
  const k2 = newKeyFile('cluster-k2');
  let server: TestNatsServer;
  let a: TestNode;
  let snapshot: SnapshotManifest;
  let nodeId = 2;

  const configure = (store: string, keyFile: string) =>
    smallStreams(store, (c) => {
      c.snapshot.keep = 1; // one snapshot: a damaged one has no older sibling to fall back to
      c.snapshot.encryption_key_file = keyFile;
    });

  before(async () => {
    mkdirSync(dir, { recursive: true });
    server = await startNatsServer();
    a = await startNode({
      dir,
      nodeId: 1,
      urls: [server.url],
      schema: SCHEMA,
      configure: configure(storeDir, k1.path),
    });
    // ~400 KB of random bytes first, so that the compressed snapshot spans several cipher chunks.
    const db = new Database(a.dbPath);
    try {
      const insert = db.prepare("INSERT INTO items (id, name, blob) VALUES (?, 'bulk', randomblob(100000))");
      for (let id = 900; id < 904; id++) insert.run(id);
    } finally {
      db.close();
    }
    writeRows(a.dbPath, 1, 200, MARKER);
    snapshot = await waitForRolloverAndSnapshot(server.url, a.config, storeDir);
    assert.ok(a.logs.has('snapshots are encrypted'));
    const saved = a.logs.records.find((r) => r.msg === 'Snapshot saved');
    assert.equal(saved?.key_id, k1.key.id);
    await a.close(); // no newer snapshot replaces the one the tests look at
  });

  after(async () => {
    await a?.close();
    await server?.close();
  });

  /** A copy of the store, to damage. */
  function storeCopy(): string {
    const copy = join(dir, `store-${++n}`);
    cpSync(storeDir, copy, { recursive: true });
    return copy;
  }

  /** Starts a new node on `store` with `keyFile` ("" = none): its open must fail, leaving its database as it was. */
  async function refusedRestore(
    store: string,
    keyFile: string,
  ): Promise<{ err: SnapshotError; logs: LogCapture }> {
    const id = ++nodeId;
    const config = nodeConfig({ dir, nodeId: id, urls: [server.url], configure: configure(store, keyFile) });
    createDatabase(config.db_path, `${SCHEMA} INSERT INTO items VALUES (77, 'local', NULL);`);
    const untouched = tableContents(config.db_path, 'items');
    const logs = new LogCapture();
    const node = new HarmonyLiteNode({
      config,
      logger: createLogger({ verbose: false, format: 'json', nodeId: id, destination: logs }),
    });
    let err: unknown;
    try {
      await node.open();
    } catch (e) {
      err = e;
    } finally {
      await node.close();
    }
    assert.ok(
      err instanceof SnapshotError,
      `expected a refused restore, got ${String(err)}\n${logs.messages().join('\n')}`,
    );
    assert.match(err.message, /^no snapshot could be restored; the database is unchanged\. Last failure: /);
    assert.equal(tableContents(config.db_path, 'items'), untouched, 'database untouched');
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.startsWith('.harmonylite-snapshot-')),
      [],
      'temporary files removed',
    );
    return { err, logs };
  }

  it('stores only ciphertext: no row value, no schema, in the data or the manifest', () => {
    assert.equal(snapshot.dataObject, `${snapshot.name}.db.zst.enc`);
    assert.deepEqual(snapshot.encryption, { cipher: 'aes-256-gcm-chunked-v1', keyId: k1.key.id });
    const data = readFileSync(join(storeDir, snapshot.dataObject));
    const manifest = readFileSync(join(storeDir, manifestObjectName(snapshot.name)));
    for (const [what, bytes] of [
      ['data', data],
      ['manifest', manifest],
    ] as const) {
      assert.ok(!bytes.includes(MARKER), `${what} holds ${MARKER}`);
      assert.ok(!bytes.includes('CREATE TABLE'), `${what} holds the schema`);
    }
  });

  it('a new node with the same key restores it and converges', async () => {
    const c = await startNode({
      dir,
      nodeId: ++nodeId,
      urls: [server.url],
      schema: SCHEMA,
      configure: configure(storeDir, k1.path),
    });
    try {
      assert.ok(c.logs.has('Snapshot restored'), c.logs.messages().join('\n'));
      await waitConverged([a.dbPath, c.dbPath], ['items']);
      assert.equal(count(c.dbPath, `SELECT count(*) FROM items WHERE name LIKE '${MARKER}-%'`), 200);
      // The restored node takes part as usual: its own writes replicate.
      writeRows(c.dbPath, 5001, 5010, 'c');
      await waitFor('c publishes its writes', async () => {
        const ranges = await streamRanges(server.url, c.config);
        return ranges.reduce((s, r) => s + r.lastSeq, 0) >= 210 ? true : undefined;
      });
    } finally {
      await c.close();
    }
  });

  it('another key: refused at once with both key ids, nothing downloaded', async () => {
    const { err, logs } = await refusedRestore(storeDir, k2.path);
    assert.equal(err.code, 'ERR_SNAPSHOT_KEY');
    assert.match(
      err.message,
      new RegExp(
        `snapshot ${snapshot.dataObject} was encrypted with key id ${k1.key.id}, the configured key is ${k2.key.id}`,
      ),
    );
    assert.match(err.hint!, new RegExp(`encryption_key_file to the key with id ${k1.key.id}`));
    assert.ok(logs.has('snapshot refused'));
    assert.ok(!logs.has('downloading snapshot'));
  });

  it('no key configured: an encrypted snapshot is refused, not restored as garbage', async () => {
    const { err } = await refusedRestore(storeDir, '');
    assert.equal(err.code, 'ERR_SNAPSHOT_KEY');
    assert.match(
      err.message,
      new RegExp(
        `snapshot ${snapshot.dataObject} is encrypted \\(key id ${k1.key.id}\\), but no snapshot.encryption_key_file is configured`,
      ),
    );
  });

  it('a key configured: an unencrypted snapshot is refused', async () => {
    const store = join(dir, `plain-store-${++n}`);
    mkdirSync(store);
    const local = new LocalSnapshotStore({ path: store });
    await local.open();
    try {
      // A plain snapshot of the up-to-date database, as a node without a key (or anyone with access to the store) makes it.
      mkdirSync(join(dir, 'plain-tmp'), { recursive: true });
      await using plain = await createSnapshotFile({
        dbPath: a.dbPath,
        busyTimeoutMs: 1000,
        nodeId: 1,
        streamPrefix: a.config.nats.stream_prefix,
        shards: a.config.replication_log.shards,
        compress: true,
        tempParent: join(dir, 'plain-tmp'),
      });
      await uploadSnapshot(local, plain);
    } finally {
      await local.close();
    }
    const { err } = await refusedRestore(store, k1.path);
    assert.equal(err.code, 'ERR_SNAPSHOT_KEY');
    assert.match(err.message, /is not encrypted, but snapshot.encryption_key_file is set/);
  });

  it('one changed byte in the stored data: refused after 3 attempts', async () => {
    const store = storeCopy();
    const path = join(store, snapshot.dataObject);
    const bytes = readFileSync(path);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    writeFileSync(path, bytes);
    const { err, logs } = await refusedRestore(store, k1.path);
    assert.equal(err.code, 'ERR_SNAPSHOT_CORRUPT');
    assert.match(err.message, /is damaged: cannot decrypt: chunk \d+ fails authentication/);
    assert.equal(logs.records.filter((r) => r.msg === 'snapshot download rejected').length, 3);
  });

  it('stored data cut at a chunk boundary, manifest adjusted to match: refused', async () => {
    const store = storeCopy();
    const path = join(store, snapshot.dataObject);
    const chunks = Math.floor((snapshot.dataBytes - CIPHER_HEADER_BYTES) / (DEFAULT_CHUNK_BYTES + 16));
    const cut = CIPHER_HEADER_BYTES + Math.max(1, chunks - 1) * (DEFAULT_CHUNK_BYTES + 16);
    assert.ok(cut < snapshot.dataBytes, `the data has ${snapshot.dataBytes} bytes`);
    truncateSync(path, cut);
    const forged: SnapshotManifest = { ...snapshot, dataBytes: cut };
    writeFileSync(join(store, manifestObjectName(snapshot.name)), encodeManifest(forged));
    const { err } = await refusedRestore(store, k1.path);
    assert.equal(err.code, 'ERR_SNAPSHOT_CORRUPT');
    assert.match(
      err.message,
      /cannot decrypt: the last chunk \(\d+\) fails authentication: the file was cut short/,
    );
  });

  it('a manifest changed by someone without the key: refused', async () => {
    const store = storeCopy();
    const forged: SnapshotManifest = {
      ...snapshot,
      originSeqs: [...snapshot.originSeqs, { origin: 42, shard: 1, seq: 7 }],
    };
    writeFileSync(join(store, manifestObjectName(snapshot.name)), encodeManifest(forged));
    const { err } = await refusedRestore(store, k1.path);
    assert.equal(err.code, 'ERR_SNAPSHOT_CORRUPT');
    assert.match(err.message, /its stream positions differ from its manifest's/);
  });
});
