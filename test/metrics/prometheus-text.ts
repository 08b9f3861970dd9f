/**
 * Reading the Prometheus text exposition in tests: samples by name and labels,
 * and the metric families (`# TYPE` lines) a scrape declares.
 */

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** Every sample line of an exposition. */
export function parseSamples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (m === null) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** Metric family name to type, from the `# TYPE` lines. */
export function metricTypes(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) out.set(m[1]!, m[2]!);
  return out;
}

/** Sum of the samples called `name` whose labels include `labels`; undefined when there is none. */
export function sampleValue(
  text: string,
  name: string,
  labels: Readonly<Record<string, string>> = {},
): number | undefined {
  const hits = parseSamples(text).filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  return hits.length === 0 ? undefined : hits.reduce((sum, s) => sum + s.value, 0);
}

/** GETs a URL and returns status and body (no keep-alive, so servers close promptly). */
export async function httpGet(
  url: string,
  method = 'GET',
): Promise<{ status: number; body: string; type: string }> {
  const res = await fetch(url, { method, headers: { connection: 'close' } });
  return { status: res.status, body: await res.text(), type: res.headers.get('content-type') ?? '' };
}
