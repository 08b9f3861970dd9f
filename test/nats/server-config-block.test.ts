/**
 * The scanner that finds a user's top-level `cluster {}` block: comments,
 * strings holding braces, nested blocks and arrays, `=`/`:`/no separator,
 * case-insensitive keys; the last block wins, as in nats-server.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configStatements, topLevelBlock } from '../../src/nats/server-config-block.ts';

const TEXT = `
# cluster { not: this }
listen: 127.0.0.1:4222 // cluster { nor: this }
authorization { user: "a}b", password: 'c{d' }
CLUSTER = {
  name: "first"
}
cluster {
  name: c1
  authorization { user: route, password: "p}w#x" }
  routes: [
    "nats://127.0.0.1:1" # a comment ]
    nats://127.0.0.1:2
  ]
  tls { cert_file: "/a b/c.pem", verify: true }, no_advertise: true
}
`;

test('the last top-level cluster block and its keys', () => {
  const body = topLevelBlock(TEXT, 'cluster');
  assert.ok(body !== undefined);
  const keys = configStatements(body).map((s) => s.key);
  assert.deepEqual(keys, ['name', 'authorization', 'routes', 'tls', 'no_advertise']);
  assert.match(configStatements(body).find((s) => s.key === 'authorization')!.value, /"p}w#x"/);
});

test('top-level keys only; none found in comments or strings', () => {
  assert.deepEqual(
    configStatements(TEXT).map((s) => s.key),
    ['listen', 'authorization', 'cluster', 'cluster'],
  );
  assert.equal(topLevelBlock('listen: 1\n# cluster { a: 1 }\n', 'cluster'), undefined);
  assert.equal(topLevelBlock('', 'cluster'), undefined);
});

test('include statements are found with their value offsets', () => {
  const body = 'include "routes.conf"\nname: x\n';
  const inc = configStatements(body).find((s) => s.key === 'include')!;
  assert.equal(body.slice(inc.valueStart, inc.valueEnd).trim(), '"routes.conf"');
});
