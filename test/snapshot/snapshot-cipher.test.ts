/**
 * The chunked AEAD of snapshot files (snapshot-cipher.ts) on buffers: round
 * trips at every chunk boundary, and every kind of damage refused with a clear
 * error before any unauthenticated byte is released.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, it } from 'node:test';
import {
  CIPHER_HEADER_BYTES,
  createDecryptStream,
  createEncryptStream,
  parseCipherHeader,
  snapshotKeyId,
} from '../../src/snapshot/snapshot-cipher.ts';
import { SnapshotError } from '../../src/snapshot/snapshot-error.ts';

const KEY = randomBytes(32);
const OTHER_KEY = randomBytes(32);
const CONTEXT = 'snapshot-1700000000123-7\nharmonylite-changes\n2';
const CHUNK = 1024;
const TAG = 16;

/** Runs `input`, fed in pieces of `pieceBytes`, through `transform`; collects what it emits. */
async function run(
  transform: Transform,
  input: Buffer,
  pieceBytes = 700,
): Promise<{ out: Buffer; error?: unknown; emitted: number }> {
  const parts: Buffer[] = [];
  let emitted = 0;
  async function* pieces() {
    for (let i = 0; i < input.length; i += pieceBytes) yield input.subarray(i, i + pieceBytes);
  }
  try {
    await pipeline(Readable.from(pieces()), transform, async (source: AsyncIterable<Buffer>) => {
      for await (const b of source) {
        parts.push(b);
        emitted += b.length;
      }
    });
    return { out: Buffer.concat(parts), emitted };
  } catch (error) {
    return { out: Buffer.concat(parts), error, emitted };
  }
}

async function encrypt(plain: Buffer, key: Uint8Array = KEY, context = CONTEXT): Promise<Buffer> {
  const r = await run(createEncryptStream({ key, context, chunkBytes: CHUNK }), plain);
  assert.equal(r.error, undefined);
  return r.out;
}

function decrypt(sealed: Buffer, key: Uint8Array = KEY, context = CONTEXT, pieceBytes?: number) {
  return run(createDecryptStream({ key, context }), sealed, pieceBytes);
}

/** Asserts that decrypting `sealed` fails with `code` and a message matching `pattern`; returns what was released. */
async function refused(
  sealed: Buffer,
  code: 'ERR_SNAPSHOT_CORRUPT' | 'ERR_SNAPSHOT_KEY',
  pattern: RegExp,
  key: Uint8Array = KEY,
  context = CONTEXT,
): Promise<number> {
  const r = await decrypt(sealed, key, context);
  assert.ok(r.error instanceof SnapshotError, `expected a SnapshotError, got ${String(r.error)}`);
  assert.equal(r.error.code, code);
  assert.match(r.error.message, pattern);
  return r.emitted;
}

const storedSize = (plainBytes: number) =>
  CIPHER_HEADER_BYTES + plainBytes + Math.max(1, Math.ceil(plainBytes / CHUNK)) * TAG;

describe('snapshot cipher', () => {
  it('round-trips at every chunk boundary, whatever the input piece sizes', async () => {
    for (const size of [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17]) {
      const plain = randomBytes(size);
      const sealed = await encrypt(plain);
      assert.equal(sealed.length, storedSize(size), `stored size of ${size} bytes`);
      for (const piece of [1, 63, 64, CHUNK + TAG, 5000]) {
        const r = await decrypt(sealed, KEY, CONTEXT, piece);
        assert.equal(r.error, undefined, `size ${size}, pieces of ${piece}: ${String(r.error)}`);
        assert.ok(r.out.equals(plain), `size ${size}, pieces of ${piece}`);
      }
    }
  });

  it('uses 64 KiB chunks by default and a fresh salt and nonce per file', async () => {
    const plain = randomBytes(200_000);
    const a = (await run(createEncryptStream({ key: KEY, context: CONTEXT }), plain)).out;
    const b = (await run(createEncryptStream({ key: KEY, context: CONTEXT }), plain)).out;
    assert.equal(parseCipherHeader(a).chunkBytes, 64 * 1024);
    assert.equal(a.length, CIPHER_HEADER_BYTES + plain.length + 4 * TAG);
    assert.ok(!a.subarray(24).equals(b.subarray(24)), 'two encryptions of the same bytes differ');
    assert.ok((await decrypt(a)).out.equals(plain));
  });

  it('names the key by the first 8 bytes of its SHA-256, in the header', async () => {
    const id = snapshotKeyId(KEY);
    assert.equal(id, createHash('sha256').update(KEY).digest('hex').slice(0, 16));
    assert.equal(parseCipherHeader(await encrypt(Buffer.from('x'))).keyId, id);
  });

  it('refuses a file encrypted with another key, naming both key ids', async () => {
    const sealed = await encrypt(randomBytes(3000), OTHER_KEY);
    const released = await refused(
      sealed,
      'ERR_SNAPSHOT_KEY',
      new RegExp(
        `^was encrypted with key id ${snapshotKeyId(OTHER_KEY)}, the configured key is ${snapshotKeyId(KEY)}$`,
      ),
    );
    assert.equal(released, 0);
  });

  it('refuses data that is not encrypted, or too short for a header', async () => {
    await refused(
      Buffer.from('SQLite format 3\0'.padEnd(4096, 'x')),
      'ERR_SNAPSHOT_CORRUPT',
      /not an encrypted snapshot/,
    );
    await refused(Buffer.alloc(0), 'ERR_SNAPSHOT_CORRUPT', /truncated: 0 bytes, shorter than the 64-byte/);
    const sealed = await encrypt(randomBytes(100));
    await refused(sealed.subarray(0, 40), 'ERR_SNAPSHOT_CORRUPT', /truncated: 40 bytes/);
  });

  it('refuses any changed byte: header, ciphertext or tag', async () => {
    const plain = randomBytes(4 * CHUNK + 100);
    const sealed = await encrypt(plain);
    const positions = [
      ...Array.from({ length: CIPHER_HEADER_BYTES }, (_, i) => i), // every header byte
      CIPHER_HEADER_BYTES, // first ciphertext byte
      CIPHER_HEADER_BYTES + CHUNK + 3, // inside chunk 0's tag
      CIPHER_HEADER_BYTES + 2 * (CHUNK + TAG) + 500, // middle of chunk 2
      sealed.length - 1, // last tag byte
    ];
    for (const at of positions) {
      const damaged = Buffer.from(sealed);
      damaged[at]! ^= 0x01;
      const r = await decrypt(damaged);
      assert.ok(r.error instanceof SnapshotError, `byte ${at} changed: accepted`);
      // Nothing of a damaged chunk (nor after it) is ever released.
      const chunk = Math.floor(Math.max(0, at - CIPHER_HEADER_BYTES) / (CHUNK + TAG));
      assert.ok(r.emitted <= chunk * CHUNK, `byte ${at}: released ${r.emitted} bytes`);
      assert.ok(plain.subarray(0, r.emitted).equals(r.out), 'what was released is authentic');
    }
    const middle = Buffer.from(sealed);
    middle[CIPHER_HEADER_BYTES + 2 * (CHUNK + TAG) + 500]! ^= 0x80;
    const released = await refused(
      middle,
      'ERR_SNAPSHOT_CORRUPT',
      /^chunk 2 fails authentication: the stored bytes were changed, reordered or belong to another snapshot$/,
    );
    assert.ok(released <= 2 * CHUNK, `released ${released} bytes`);
  });

  it('refuses a file cut short, at a chunk boundary or inside a chunk, or extended', async () => {
    const sealed = await encrypt(randomBytes(3 * CHUNK + 10));
    const boundary = CIPHER_HEADER_BYTES + 2 * (CHUNK + TAG);
    await refused(
      sealed.subarray(0, boundary),
      'ERR_SNAPSHOT_CORRUPT',
      /the last chunk \(1\) fails authentication: the file was cut short, extended or changed/,
    );
    await refused(sealed.subarray(0, sealed.length - 1), 'ERR_SNAPSHOT_CORRUPT', /last chunk \(3\) fails/);
    await refused(
      sealed.subarray(0, CIPHER_HEADER_BYTES),
      'ERR_SNAPSHOT_CORRUPT',
      /truncated: the data ends inside chunk 0/,
    );
    await refused(
      sealed.subarray(0, boundary + 5),
      'ERR_SNAPSHOT_CORRUPT',
      /truncated: the data ends inside chunk 2/,
    );
    await refused(Buffer.concat([sealed, Buffer.alloc(1)]), 'ERR_SNAPSHOT_CORRUPT', /fails authentication/);
    // An exact multiple of the chunk size: the last full chunk is the final one, nothing may follow it.
    const full = await encrypt(randomBytes(2 * CHUNK));
    const extra = await encrypt(randomBytes(10));
    await refused(
      Buffer.concat([full, extra.subarray(CIPHER_HEADER_BYTES)]),
      'ERR_SNAPSHOT_CORRUPT',
      /chunk 1 fails authentication/,
    );
  });

  it('refuses reordered chunks and chunks of another file under the same key', async () => {
    const sealed = await encrypt(randomBytes(3 * CHUNK + 10));
    const at = (i: number) => CIPHER_HEADER_BYTES + i * (CHUNK + TAG);
    const swapped = Buffer.concat([
      sealed.subarray(0, at(0)),
      sealed.subarray(at(1), at(2)),
      sealed.subarray(at(0), at(1)),
      sealed.subarray(at(2)),
    ]);
    await refused(swapped, 'ERR_SNAPSHOT_CORRUPT', /^chunk 0 fails authentication/);
    const other = await encrypt(randomBytes(3 * CHUNK + 10));
    const mixed = Buffer.concat([
      sealed.subarray(0, at(1)),
      other.subarray(at(1), at(2)),
      sealed.subarray(at(2)),
    ]);
    await refused(mixed, 'ERR_SNAPSHOT_CORRUPT', /^chunk 1 fails authentication/);
  });

  it('binds a file to its context: under another snapshot name it does not decrypt', async () => {
    const sealed = await encrypt(randomBytes(500));
    await refused(
      sealed,
      'ERR_SNAPSHOT_CORRUPT',
      /fails authentication/,
      KEY,
      'snapshot-1700000000999-7\nharmonylite-changes\n2',
    );
  });

  it('streams: output flows before the input ends, with bounded buffers', async () => {
    const pieces = 64;
    const piece = randomBytes(256 * 1024);
    let fed = 0;
    let fedWhenFirstOutput = -1;
    let maxBuffered = 0;
    const encryptor = createEncryptStream({ key: KEY, context: CONTEXT });
    const decryptor = createDecryptStream({ key: KEY, context: CONTEXT });
    let total = 0;
    const digest = createHash('sha256');
    const expected = createHash('sha256');
    async function* source() {
      for (let i = 0; i < pieces; i++) {
        fed++;
        expected.update(piece);
        maxBuffered = Math.max(
          maxBuffered,
          encryptor.writableLength +
            encryptor.readableLength +
            decryptor.writableLength +
            decryptor.readableLength,
        );
        yield piece;
      }
    }
    await pipeline(Readable.from(source()), encryptor, decryptor, async (out: AsyncIterable<Buffer>) => {
      for await (const b of out) {
        if (fedWhenFirstOutput < 0) fedWhenFirstOutput = fed;
        total += b.length;
        digest.update(b);
      }
    });
    assert.equal(total, pieces * piece.length);
    assert.equal(digest.digest('hex'), expected.digest('hex'));
    assert.ok(
      fedWhenFirstOutput > 0 && fedWhenFirstOutput < 4,
      `first output after ${fedWhenFirstOutput} pieces`,
    );
    // 16 MiB went through; the streams never held more than a few input pieces.
    assert.ok(maxBuffered < 4 * 1024 * 1024, `buffered up to ${maxBuffered} bytes`);
  });
});
