/**
 * The Grafana dashboard in grafana/ queries only metrics a running node
 * exposes: every PromQL expression (panel targets and template queries) is
 * taken apart into metric names, and each must exist on a node's /metrics with
 * the default namespace. It also covers what the dashboard must show.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, startNode, type TestNode } from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { httpGet, metricTypes, parseSamples } from './prometheus-text.ts';

/** PromQL words that look like metric names: aggregations, functions, keywords. */
const PROMQL_WORDS = new Set([
  'sum', 'min', 'max', 'avg', 'count', 'stddev', 'stdvar', 'topk', 'bottomk', 'quantile', 'count_values', 'group',
  'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'atan2',
  'inf', 'nan',
]); // prettier-ignore

/**
 * Metric names in a PromQL expression: strings, label matchers, range
 * selectors and label lists removed; identifiers followed by "(" are functions.
 * Grafana's `label_values(metric, label)` yields its metric.
 */
export function metricNames(expr: string): string[] {
  const lv = /^\s*label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(expr);
  if (lv !== null) return [lv[1]!];
  const e = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/gi, ' ');
  const names = new Set<string>();
  for (const m of e.matchAll(/(?<![\w$.])[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const rest = e.slice(m.index + m[0].length);
    if (/^\s*\(/.test(rest) || PROMQL_WORDS.has(m[0].toLowerCase())) continue;
    names.add(m[0]);
  }
  return [...names];
}

interface Panel {
  title?: string;
  targets?: { expr?: string }[];
  panels?: Panel[];
}

/** Every PromQL expression of the dashboard, with where it is. */
function expressions(dashboard: {
  panels?: Panel[];
  templating?: { list?: { name: string; query?: unknown }[] };
}): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  const walk = (panels: Panel[] = []) => {
    for (const p of panels) {
      for (const t of p.targets ?? [])
        if (t.expr !== undefined) out.push({ where: `panel "${p.title}"`, expr: t.expr });
      walk(p.panels);
    }
  };
  walk(dashboard.panels);
  for (const v of dashboard.templating?.list ?? []) {
    const q = typeof v.query === 'string' ? v.query : (v.query as { query?: string } | undefined)?.query;
    if (q !== undefined && /label_values|\(/.test(q)) out.push({ where: `variable $${v.name}`, expr: q });
  }
  return out;
}

describe('metricNames', () => {
  it('finds metric names, not functions, labels, durations or variables', () => {
    assert.deepEqual(
      metricNames(
        'histogram_quantile(0.99, sum by (le, instance) (rate(harmonylite_apply_latency_seconds_bucket{instance=~"$instance", shard!="x y"}[$__rate_interval])))',
      ),
      ['harmonylite_apply_latency_seconds_bucket'],
    );
    assert.deepEqual(
      metricNames(
        'sum(rate(a_total[5m])) / sum without (shard) (b) > bool 0 or on(instance) c_seconds offset 1h',
      ),
      ['a_total', 'b', 'c_seconds'],
    );
    assert.deepEqual(metricNames('label_values(harmonylite_nats_connected, instance)'), [
      'harmonylite_nats_connected',
    ]);
  });
});

describe('grafana/harmonylite-dashboard.json', () => {
  const dashboard = JSON.parse(
    readFileSync(join(REPO_ROOT, 'grafana/harmonylite-dashboard.json'), 'utf8'),
  ) as Parameters<typeof expressions>[0];
  const exprs = expressions(dashboard);
  const dir = tempDir('hl-dashboard-');
  let nats: TestNatsServer | undefined;
  let node: TestNode | undefined;
  let exposition = '';

  before(async () => {
    nats = await startNatsServer();
    node = await startNode({
      dir: dir.path,
      nodeId: 1,
      urls: [nats.url],
      schema: 'CREATE TABLE t (id INTEGER PRIMARY KEY)',
      configure: (c) => {
        c.prometheus.enable = true;
        c.prometheus.bind = '127.0.0.1:0';
      },
    });
    exposition = (await httpGet(node.node.observability!.metricsServer!.url!)).body;
  });

  after(async () => {
    await node?.close();
    await nats?.close();
    dir.remove();
  });

  it('queries only metrics a running node exposes', () => {
    const types = metricTypes(exposition);
    const samples = new Set(parseSamples(exposition).map((s) => s.name));
    const exists = (name: string) => {
      if (types.has(name) || samples.has(name)) return true;
      const base = /^(.*)_(bucket|sum|count)$/.exec(name)?.[1];
      return base !== undefined && ['histogram', 'summary'].includes(types.get(base) ?? '');
    };
    assert.ok(exprs.length >= 20, `only ${exprs.length} expressions found`);
    const unknown = exprs.flatMap(({ where, expr }) =>
      metricNames(expr)
        .filter((n) => !exists(n))
        .map((n) => `${n} (${where})`),
    );
    assert.deepEqual(unknown, [], 'metrics the node does not expose');
    for (const { where, expr } of exprs)
      assert.ok(metricNames(expr).length > 0, `no metric in ${where}: ${expr}`);
  });

  it('shows what an operator needs: throughput, lag per shard, pending, dead letters, snapshot age, latency, NATS', () => {
    const used = new Set(exprs.flatMap(({ expr }) => metricNames(expr)));
    for (const name of [
      'harmonylite_published',
      'harmonylite_changes_applied_total',
      'harmonylite_replication_lag_messages',
      'harmonylite_replication_lag_seconds',
      'harmonylite_pending_publish',
      'harmonylite_dead_letters_total',
      'harmonylite_snapshot_age_seconds',
      'harmonylite_publish_latency_seconds_bucket',
      'harmonylite_apply_latency_seconds_bucket',
      'harmonylite_nats_connected',
    ])
      assert.ok(used.has(name), `the dashboard does not query ${name}`);
    const lagPanels = exprs.filter(({ expr }) => /replication_lag_/.test(expr));
    assert.ok(
      lagPanels.every(({ expr }) => /by \([^)]*\bshard\b/.test(expr)),
      'lag is shown per shard',
    );
  });
});
