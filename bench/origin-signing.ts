/**
 * What authenticated origins and bounded decoding cost per batch, side by side
 * in one run: publishing a batch without a signature (the baseline: nothing),
 * with one (Ed25519 sign of id + payload), receiving it without a check, with a
 * signature check, with the signature check and the origin's seq ceiling (cached),
 * and the bounded CBOR walk next to the full decode it guards. Each figure is the
 * median of 3 passes; the passes interleave the variants, so a busy machine slows
 * them alike.
 *
 *   npx tsx bench/origin-signing.ts [--changes 10,1000] [--rounds 2000]
 */
import { generateKeyPairSync } from 'node:crypto';
import { parseArgs } from 'node:util';
import { compressBody, decodeBody, encodeRecords } from '../src/codec/change-batch-codec.ts';
import { checkCborLimits } from '../src/codec/check-cbor-limits.ts';
import {
  keyFingerprint,
  publicKeyFromRaw,
  rawPublicKey,
  signBatch,
  verifyBatch,
} from '../src/replication/batch-signature.ts';
import { toWire } from '../src/codec/sql-value.ts';
import { parseMsgId } from '../src/replication/msg-id.ts';
import { OriginSeqCeiling } from '../src/replication/origin-seq-ceiling.ts';
import type { ChangeRecord } from '../src/codec/change-record.ts';

const { values } = parseArgs({
  options: { changes: { type: 'string', default: '10,1000' }, rounds: { type: 'string', default: '2000' } },
});
const sizes = values.changes.split(',').map(Number);
const rounds = Number(values.rounds);
const PASSES = 3;

function batch(changes: number) {
  const records: ChangeRecord[] = Array.from({ length: changes }, (_, i) => ({
    FromNodeId: 1,
    Payload: {
      Id: i + 1,
      Type: 'insert',
      TableName: 'items',
      Row: {
        id: toWire(BigInt(i)),
        writer: toWire(1n),
        seq: toWire(BigInt(i)),
        payload: toWire('x'.repeat(100)),
      },
      CreatedAt: Date.now(),
    },
  }));
  const cbor = encodeRecords(records);
  return { cbor, payload: compressBody(cbor) };
}

const msgId = '1-1-1796650022710000';
const { privateKey } = generateKeyPairSync('ed25519');
const raw = rawPublicKey(privateKey);
const key = { privateKey, fingerprint: keyFingerprint(raw) };
const publicKey = publicKeyFromRaw(raw);
// The ceiling as a receiver holds it between reads of the cluster bucket: cached.
const ceiling = new OriginSeqCeiling(() => Promise.resolve(Number.MAX_SAFE_INTEGER));
await ceiling.refusal(parseMsgId(msgId)!);

async function perBatchUs(fn: () => unknown): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < rounds; i++) await fn();
  return ((performance.now() - t0) / rounds) * 1000;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

for (const changes of sizes) {
  const { cbor, payload } = batch(changes);
  const header = signBatch(key, msgId, payload);
  const variants: [string, () => unknown][] = [
    ['publish: no signature', () => msgId.length],
    ['publish: sign (Ed25519)', () => signBatch(key, msgId, payload)],
    ['receive: no check', () => header.length],
    ['receive: verify (Ed25519)', () => verifyBatch(publicKey, header, msgId, payload)],
    [
      'receive: verify + seq ceiling (cached)',
      async () =>
        verifyBatch(publicKey, header, msgId, payload) && (await ceiling.refusal(parseMsgId(msgId)!)),
    ],
    ['decode: bounded CBOR walk', () => checkCborLimits(cbor)],
    ['decode: decodeBody (zstd + walk + CBOR + checks)', () => decodeBody(payload)],
  ];
  for (const [, fn] of variants) for (let i = 0; i < Math.min(200, rounds); i++) await fn();
  const times = variants.map((): number[] => []);
  for (let pass = 0; pass < PASSES; pass++)
    for (const [i, [, fn]] of variants.entries()) times[i]!.push(await perBatchUs(fn));
  console.log(
    `batch of ${changes} changes: ${cbor.length} CBOR bytes, ${payload.length} compressed (median of ${PASSES} passes of ${rounds})`,
  );
  for (const [i, [what]] of variants.entries()) {
    const us = median(times[i]!);
    console.log(
      `  ${what.padEnd(50)} ${us.toFixed(1).padStart(8)} us/batch ${(us / changes).toFixed(3).padStart(7)} us/change`,
    );
  }
}
