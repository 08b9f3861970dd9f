/** Warnings for nats-server versions with a known defect that endangers our data. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { objectStorePurgeDefect } from '../../src/nats/server-defects.ts';

test('the partial-purge defect is reported for replicated snapshot buckets on nats-server before 2.9.18', () => {
  assert.match(objectStorePurgeDefect('2.9.10', 3) ?? '', /nats-server 2\.9\.10 .*#4196.*replicas = 1/);
  assert.match(objectStorePurgeDefect('2.9.17', 2) ?? '', /#4196/);
  assert.match(objectStorePurgeDefect('2.8.4', 3) ?? '', /#4196/);
});

test('no warning for one replica, fixed versions, or a version that cannot be read', () => {
  assert.equal(objectStorePurgeDefect('2.9.10', 1), undefined);
  assert.equal(objectStorePurgeDefect('2.9.18', 3), undefined);
  assert.equal(objectStorePurgeDefect('2.10.0', 3), undefined);
  assert.equal(objectStorePurgeDefect(undefined, 3), undefined);
  assert.equal(objectStorePurgeDefect('nightly', 3), undefined);
});
