import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { SnapshotStoreError, type SnapshotStore } from '../../../src/snapshot/snapshot-store.ts';
import { tempDir } from '../../helpers/temp-dir.ts';

export interface StoreUnderTest {
  /** A store on a fresh, empty location (its own prefix or directory), not yet opened. */
  readonly store: SnapshotStore;
  /** A second, independent store on the same location: "another node". */
  readonly reopen?: () => SnapshotStore;
  /** Removes what the test left behind (the server itself may outlive it). */
  readonly cleanup: () => Promise<void>;
}

const MB = 1024 * 1024;

/**
 * The contract of `SnapshotStore` (src/snapshot/snapshot-store.ts) as tests:
 * every backend runs exactly this suite against a real server of its protocol.
 * `makeStore` is called once per test.
 */
export function runSnapshotStoreConformance(name: string, makeStore: () => Promise<StoreUnderTest>): void {
  describe(`${name}: SnapshotStore conformance`, () => {
    const files = tempDir('hl-store-conf-');
    let big = ''; // 12 MiB: several S3 parts, many SFTP/HTTP chunks
    let huge = ''; // 24 MiB: long enough that an abort lands mid-transfer

    before(async () => {
      big = await writeRandomFile(join(files.path, 'big.bin'), 12 * MB);
      huge = await writeRandomFile(join(files.path, 'huge.bin'), 24 * MB);
    });
    after(() => files.remove());

    async function withStore(fn: (store: SnapshotStore, t: StoreUnderTest) => Promise<void>): Promise<void> {
      const t = await makeStore();
      try {
        await t.store.open();
        await fn(t.store, t);
      } finally {
        await t.store.close();
        await t.cleanup();
      }
    }

    it('opens idempotently and lists nothing on a fresh location', () =>
      withStore(async (store) => {
        await store.open();
        assert.deepEqual(await store.list(), []);
        assert.equal(typeof store.description, 'string');
        assert.ok(store.description.length > 0);
      }));

    it('round-trips a multi-MB file byte for byte', () =>
      withStore(async (store) => {
        await store.putFile('snapshot-1.db', big);
        const out = join(files.path, 'round-trip.out');
        await store.getFile('snapshot-1.db', out);
        assert.equal(await sha256File(out), await sha256File(big));
        assert.equal(existsSync(`${out}.part`), false);
      }));

    it('round-trips an empty file', () =>
      withStore(async (store) => {
        const empty = join(files.path, 'empty.bin');
        await writeFile(empty, '');
        const puts: number[] = [];
        const gets: number[] = [];
        await store.putFile('empty.db', empty, { onProgress: (n) => puts.push(n) });
        const out = join(files.path, 'empty.out');
        await store.getFile('empty.db', out, { onProgress: (n) => gets.push(n) });
        assert.equal((await readFile(out)).length, 0);
        assert.equal(puts.at(-1), 0, 'put reports its final size 0');
        assert.equal(gets.at(-1), 0, 'get reports its final size 0');
        assert.deepEqual(
          (await store.list()).map((o) => [o.name, o.size]),
          [['empty.db', 0]],
        );
      }));

    it('overwrites an existing object', () =>
      withStore(async (store) => {
        const small = join(files.path, 'overwrite-small.bin');
        await writeFile(small, 'old contents');
        await store.putFile('snap.db', big);
        await store.putFile('snap.db', small);
        const out = join(files.path, 'overwrite.out');
        await writeFile(out, 'stale local file that getFile replaces');
        await store.getFile('snap.db', out);
        assert.equal(await readFile(out, 'utf8'), 'old contents');
        assert.deepEqual(
          (await store.list()).map((o) => [o.name, o.size]),
          [['snap.db', 12]],
        );
      }));

    it('getFile of a missing object throws ERR_SNAPSHOT_NOT_FOUND and writes nothing', () =>
      withStore(async (store) => {
        const out = join(files.path, 'missing.out');
        await assert.rejects(store.getFile('no-such-snapshot.db', out), (err) => {
          assertStoreError(err, 'ERR_SNAPSHOT_NOT_FOUND');
          assert.match(err.message, /no-such-snapshot\.db/);
          return true;
        });
        assert.equal(existsSync(out), false);
        assert.equal(existsSync(`${out}.part`), false);
      }));

    it('putBytes/getBytes round-trip and overwrite; a missing object reads as undefined', () =>
      withStore(async (store) => {
        assert.equal(await store.getBytes('manifest.json'), undefined);
        const first = new TextEncoder().encode('{"v":1}');
        await store.putBytes('manifest.json', first);
        assert.deepEqual(await store.getBytes('manifest.json'), first);
        const second = randomBytes(70_000);
        await store.putBytes('manifest.json', second);
        assert.deepEqual(Buffer.from((await store.getBytes('manifest.json')) ?? []), second);
      }));

    it('lists exactly the stored objects, sorted, with sizes and times, no temporary ones', () =>
      withStore(async (store) => {
        const startedMs = Date.now();
        await store.putFile('b-snapshot.db', big);
        await store.putBytes('a-manifest.json', new Uint8Array([1, 2, 3]));
        await store.putBytes('c-pointer', new Uint8Array(0));
        const listed = await store.list();
        assert.deepEqual(
          listed.map((o) => [o.name, o.size]),
          [
            ['a-manifest.json', 3],
            ['b-snapshot.db', 12 * MB],
            ['c-pointer', 0],
          ],
        );
        for (const o of listed) {
          assert.ok(o.modified instanceof Date);
          // servers keep whole seconds, clocks are the same host: a generous window
          assert.ok(
            Math.abs(o.modified.getTime() - startedMs) < 120_000,
            `${o.name} modified ${o.modified.toISOString()}`,
          );
        }
      }));

    it('deletes idempotently', () =>
      withStore(async (store) => {
        await store.putBytes('gone.db', new Uint8Array([9]));
        await store.putBytes('kept.db', new Uint8Array([8]));
        await store.delete('gone.db');
        await store.delete('gone.db');
        await store.delete('never-existed.db');
        assert.equal(await store.getBytes('gone.db'), undefined);
        assert.deepEqual(
          (await store.list()).map((o) => o.name),
          ['kept.db'],
        );
      }));

    it('reports progress monotonically up to the file size, for put and get', () =>
      withStore(async (store) => {
        const puts: number[] = [];
        await store.putFile('progress.db', big, { onProgress: (n) => puts.push(n) });
        const gets: number[] = [];
        await store.getFile('progress.db', join(files.path, 'progress.out'), {
          onProgress: (n) => gets.push(n),
        });
        for (const [what, seen] of [
          ['put', puts],
          ['get', gets],
        ] as const) {
          assert.ok(seen.length >= 2, `${what}: expected several progress calls, saw ${seen.length}`);
          assert.equal(seen.at(-1), 12 * MB, `${what}: last progress`);
          for (let i = 1; i < seen.length; i++) {
            assert.ok(
              seen[i]! >= seen[i - 1]!,
              `${what}: progress went back from ${seen[i - 1]} to ${seen[i]}`,
            );
          }
        }
      }));

    it('an aborted putFile rejects with ERR_SNAPSHOT_STORE_ABORTED and keeps the old object', () =>
      withStore(async (store) => {
        await store.putBytes('abort.db', new TextEncoder().encode('old'));
        const controller = new AbortController();
        const reason = new Error('operator cancelled');
        let lastProgress = 0;
        await assert.rejects(
          store.putFile('abort.db', huge, {
            signal: controller.signal,
            onProgress: (n) => {
              lastProgress = n;
              controller.abort(reason);
            },
          }),
          (err) => {
            assertStoreError(err, 'ERR_SNAPSHOT_STORE_ABORTED');
            assert.equal(err.cause, reason);
            return true;
          },
        );
        assert.ok(lastProgress < 24 * MB, `abort landed after the whole upload (${lastProgress} bytes)`);
        assert.equal(new TextDecoder().decode(await store.getBytes('abort.db')), 'old');
        assert.deepEqual(
          (await store.list()).map((o) => [o.name, o.size]),
          [['abort.db', 3]],
        );
        // an already-aborted signal fails before any transfer
        await assert.rejects(store.putFile('abort.db', big, { signal: AbortSignal.abort() }), (err) => {
          assertStoreError(err, 'ERR_SNAPSHOT_STORE_ABORTED');
          return true;
        });
        await assert.rejects(store.list(AbortSignal.abort()), (err) => {
          assertStoreError(err, 'ERR_SNAPSHOT_STORE_ABORTED');
          return true;
        });
      }));

    it('an aborted getFile rejects with ERR_SNAPSHOT_STORE_ABORTED and leaves no local file', () =>
      withStore(async (store) => {
        await store.putFile('abort-get.db', huge);
        const out = join(files.path, 'abort-get.out');
        const controller = new AbortController();
        await assert.rejects(
          store.getFile('abort-get.db', out, {
            signal: controller.signal,
            onProgress: () => controller.abort(),
          }),
          (err) => {
            assertStoreError(err, 'ERR_SNAPSHOT_STORE_ABORTED');
            return true;
          },
        );
        assert.equal(existsSync(out), false);
        assert.deepEqual(
          (await readdir(files.path)).filter((f) => f.startsWith('abort-get.out')),
          [],
        );
        // the store still works after an aborted transfer
        await store.getFile('abort-get.db', out);
        assert.equal(await sha256File(out), await sha256File(huge));
      }));

    it('refuses invalid names with ERR_SNAPSHOT_STORE_INVALID_NAME', () =>
      withStore(async (store) => {
        for (const bad of ['', '.hidden', '../escape', 'a/b', 'sp ace', 'x'.repeat(201), '.x.abc.partial']) {
          await assert.rejects(store.putBytes(bad, new Uint8Array([1])), (err) => {
            assertStoreError(err, 'ERR_SNAPSHOT_STORE_INVALID_NAME');
            return true;
          });
          await assert.rejects(store.delete(bad), (err) => {
            assertStoreError(err, 'ERR_SNAPSHOT_STORE_INVALID_NAME');
            return true;
          });
        }
      }));

    it('another store on the same location sees the objects (a new node restores)', () =>
      withStore(async (store, t) => {
        if (!t.reopen) return;
        await store.putFile('shared.db', big);
        await store.putBytes('shared.json', new Uint8Array([7]));
        const other = t.reopen();
        try {
          await other.open();
          assert.deepEqual(
            (await other.list()).map((o) => o.name),
            ['shared.db', 'shared.json'],
          );
          const out = join(files.path, 'shared.out');
          await other.getFile('shared.db', out);
          assert.equal(await sha256File(out), await sha256File(big));
          await other.delete('shared.json');
        } finally {
          await other.close();
        }
        assert.deepEqual(
          (await store.list()).map((o) => o.name),
          ['shared.db'],
        );
      }));

    it('streams: live memory stays below the size of a 64 MiB file, up and down', () =>
      withStore(async (store) => {
        const large = await writeRandomFile(join(files.path, 'large.bin'), 64 * MB);
        const out = join(files.path, 'large.out');
        const up = await liveMemoryGrowth(() => store.putFile('large.db', large));
        const down = await liveMemoryGrowth(() => store.getFile('large.db', out));
        await rm(large);
        await rm(out);
        // A backend that buffered the file would hold all 64 MiB. Measured: 8-16 MiB for
        // local, WebDAV and SFTP, 25 MiB for S3 with 2 × 5 MiB parts (lib-storage copies each part).
        assert.ok(up < 48 * MB, `upload held ${(up / MB).toFixed(1)} MiB live`);
        assert.ok(down < 48 * MB, `download held ${(down / MB).toFixed(1)} MiB live`);
      }));

    it('rejects use after close', () =>
      withStore(async (store) => {
        await store.close();
        await store.close();
        await assert.rejects(store.list(), (err) => {
          assertStoreError(err, 'ERR_SNAPSHOT_STORE');
          return true;
        });
      }));
  });
}

/**
 * Peak growth of live JS memory (heap + array buffers, after a forced GC at
 * every 50 ms sample) while `fn` runs: what a transfer holds, not garbage it left.
 */
async function liveMemoryGrowth(fn: () => Promise<void>): Promise<number> {
  const live = () => {
    collectGarbage();
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  const base = live();
  let peak = base;
  const timer = setInterval(() => (peak = Math.max(peak, live())), 50);
  try {
    await fn();
  } finally {
    clearInterval(timer);
  }
  return peak - base;
}

/** `gc()` without starting node with --expose-gc (the test runner starts the process). */
const collectGarbage: () => void = (() => {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
})();

/** Asserts `err` is a SnapshotStoreError with `code` (and narrows it). */
export function assertStoreError(
  err: unknown,
  code: SnapshotStoreError['code'],
): asserts err is SnapshotStoreError {
  assert.ok(err instanceof SnapshotStoreError, `expected a SnapshotStoreError, got ${String(err)}`);
  assert.equal(err.code, code, `code of: ${err.message}`);
}

/** Writes `sizeBytes` of random bytes to `path` in 1 MiB chunks; returns `path`. */
export async function writeRandomFile(path: string, sizeBytes: number): Promise<string> {
  const handle = await open(path, 'w');
  try {
    for (let left = sizeBytes; left > 0; left -= MB) await handle.write(randomBytes(Math.min(MB, left)));
  } finally {
    await handle.close();
  }
  return path;
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
