import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatMsgId, parseMsgId } from '../../src/replication/msg-id.ts';

test('batch ids round-trip, including microsecond-clock sequences', () => {
  for (const id of [
    { origin: 1, shard: 1, seq: 1 },
    { origin: 2147483647, shard: 64, seq: Date.now() * 1000 },
    { origin: 7, shard: 3, seq: Number.MAX_SAFE_INTEGER },
  ]) {
    assert.deepEqual(parseMsgId(formatMsgId(id)), id);
  }
});

test('ids not made by a node are not batch ids', () => {
  for (const s of [
    undefined,
    '',
    'abc',
    '1-2',
    '1-2-3-4',
    '1-2-99999999999999999',
    '-1-2-3',
    '1-1234567-3',
  ]) {
    assert.equal(parseMsgId(s), undefined, String(s));
  }
});
