/**
 * The /metrics endpoint on its own: only GET /metrics answers, in the text
 * format, with the seed's four metrics under the namespace; loopback is the
 * default bind, HarmonyLite's ":port" means every interface; the snapshot age
 * grows between saves.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { defaultConfig } from '../../src/config/config.ts';
import { silentLogger } from '../../src/logger.ts';
import { BindAddressError, parseBindAddress } from '../../src/metrics/http-endpoint.ts';
import { MetricsServer } from '../../src/metrics/metrics-server.ts';
import { Metrics } from '../../src/metrics/metrics.ts';
import { httpGet, metricTypes, sampleValue } from './prometheus-text.ts';

describe('parseBindAddress', () => {
  it('reads host:port, :port and [ipv6]:port', () => {
    assert.deepEqual(parseBindAddress('127.0.0.1:3010'), { host: '127.0.0.1', port: 3010 });
    assert.deepEqual(parseBindAddress(':3010'), { host: undefined, port: 3010 });
    assert.deepEqual(parseBindAddress('[::1]:0'), { host: '::1', port: 0 });
    assert.deepEqual(parseBindAddress('localhost:8090'), { host: 'localhost', port: 8090 });
  });

  it('rejects anything else', () => {
    for (const bad of ['3010', '127.0.0.1', '127.0.0.1:99999', ':x', '::1:3010', ''])
      assert.throws(() => parseBindAddress(bad), BindAddressError, bad);
  });

  it('defaults to loopback for both endpoints', () => {
    const c = defaultConfig();
    assert.equal(parseBindAddress(c.prometheus.bind).host, '127.0.0.1');
    assert.equal(parseBindAddress(c.health_check.bind).host, '127.0.0.1');
  });
});

describe('MetricsServer', () => {
  it('serves GET /metrics only, on the bind address', async () => {
    const metrics = new Metrics({ namespace: 'harmonylite', subsystem: '', processMetrics: false });
    metrics.published.inc(3);
    metrics.scanChanges.observe(0.0002);
    await using server = new MetricsServer({
      bind: '127.0.0.1:0',
      registry: metrics.registry,
      logger: silentLogger(),
    });
    await server.open();
    assert.equal(server.address?.address, '127.0.0.1');
    const url = server.url!;
    const res = await httpGet(url);
    assert.equal(res.status, 200);
    assert.match(res.type, /^text\/plain; version=0\.0\.4/);
    assert.equal(sampleValue(res.body, 'harmonylite_published'), 3);
    assert.equal(sampleValue(res.body, 'harmonylite_scan_changes_count'), 1);
    // 200 µs lands in a sub-millisecond bucket, not in the first "second-sized" one.
    assert.equal(sampleValue(res.body, 'harmonylite_scan_changes_bucket', { le: '0.00025' }), 1);
    assert.equal(sampleValue(res.body, 'harmonylite_scan_changes_bucket', { le: '0.0001' }), 0);
    const types = metricTypes(res.body);
    assert.equal(types.get('harmonylite_published'), 'counter');
    assert.equal(types.get('harmonylite_pending_publish'), 'gauge');
    assert.equal(types.get('harmonylite_count_changes'), 'histogram');

    assert.equal((await httpGet(url, 'HEAD')).status, 200);
    assert.equal((await httpGet(`${url}?x=1`)).status, 200);
    const base = url.replace(/\/metrics$/, '');
    for (const path of ['/', '/health', '/metrics/x', '/debug/pprof'])
      assert.equal((await httpGet(base + path)).status, 404, path);
    assert.equal((await httpGet(url, 'POST')).status, 404);
  });

  it('listens on every interface for ":port" and frees the port on close', async () => {
    const metrics = new Metrics({ namespace: 'hl', subsystem: 'replication', processMetrics: false });
    const server = new MetricsServer({ bind: ':0', registry: metrics.registry, logger: silentLogger() });
    await server.open();
    assert.ok(['::', '0.0.0.0'].includes(server.address?.address ?? ''), server.address?.address);
    const res = await httpGet(server.url!);
    assert.equal(sampleValue(res.body, 'hl_replication_published'), 0);
    await server.close();
    await server.close();
    await assert.rejects(httpGet(server.url!));
  });

  it('adds process metrics under the prefix when asked', async () => {
    const metrics = new Metrics({ namespace: 'harmonylite', subsystem: '', processMetrics: false });
    assert.equal(
      metricTypes(await metrics.registry.metrics()).has('harmonylite_process_resident_memory_bytes'),
      false,
    );
    metrics.enableProcessMetrics();
    metrics.enableProcessMetrics();
    const types = metricTypes(await metrics.registry.metrics());
    assert.ok(types.has('harmonylite_process_resident_memory_bytes'));
    assert.ok(types.has('harmonylite_nodejs_eventloop_lag_seconds'));
  });

  it('reports the snapshot age as it grows, not as last set', async () => {
    const metrics = new Metrics({ namespace: 'harmonylite', subsystem: '', processMetrics: false });
    metrics.snapshotAge.set(100);
    await new Promise((r) => setTimeout(r, 50));
    const age = sampleValue(await metrics.registry.metrics(), 'harmonylite_snapshot_age_seconds')!;
    assert.ok(age >= 100.04 && age < 101, String(age));
  });
});
