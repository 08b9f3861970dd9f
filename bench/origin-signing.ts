/**
 * What authenticated origins and bounded decoding cost per batch, side by side
 * in one run: publishing a batch without a signature (the baseline: nothing),
 * with one (Ed25519 sign of id + payload), receiving it without a check, with a
 * signature check, and the bounded CBOR walk next to the full decode it guards.
 *
 *   npx tsx bench/origin-signing.ts [--changes 1000] [--rounds 2000]
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
import type { ChangeRecord } from '../src/codec/change-record.ts';

const { values } = parseArgs({
  options: { changes: { type: 'string', default: '1000' }, rounds: { type: 'string', default: '2000' } },
});
const changes = Number(values.changes);
const rounds = Number(values.rounds);

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
const payload = compressBody(cbor);
const msgId = '1-1-1796650022710000';
const { privateKey } = generateKeyPairSync('ed25519');
const raw = rawPublicKey(privateKey);
const key = { privateKey, fingerprint: keyFingerprint(raw) };
const publicKey = publicKeyFromRaw(raw);
const header = signBatch(key, msgId, payload);

function perBatchUs(fn: () => unknown): number {
  for (let i = 0; i < Math.min(200, rounds); i++) fn();
  const t0 = performance.now();
  for (let i = 0; i < rounds; i++) fn();
  return ((performance.now() - t0) / rounds) * 1000;
}

const rows: [string, number][] = [
  ['publish: no signature', perBatchUs(() => msgId.length)],
  ['publish: sign (Ed25519)', perBatchUs(() => signBatch(key, msgId, payload))],
  ['receive: no check', perBatchUs(() => header.length)],
  ['receive: verify (Ed25519)', perBatchUs(() => verifyBatch(publicKey, header, msgId, payload))],
  ['decode: bounded CBOR walk', perBatchUs(() => checkCborLimits(cbor))],
  ['decode: decodeBody (zstd + walk + CBOR + checks)', perBatchUs(() => decodeBody(payload))],
];
console.log(`batch of ${changes} changes: ${cbor.length} CBOR bytes, ${payload.length} compressed`);
for (const [what, us] of rows)
  console.log(
    `${what.padEnd(50)} ${us.toFixed(1).padStart(8)} us/batch ${(us / changes).toFixed(3).padStart(7)} us/change`,
  );
