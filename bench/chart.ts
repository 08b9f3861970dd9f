/**
 * A dependency-free SVG chart: replicated throughput (bars, left axis) and p99
 * latency (line, right axis) per shard count. Pure.
 */
export interface ChartPoint {
  readonly shards: number;
  readonly rowsPerSecond: number;
  readonly p99Ms: number;
}

const W = 640;
const H = 360;
const PAD = { left: 70, right: 70, top: 40, bottom: 50 };

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return Math.ceil(v / p) * p;
}

function esc(s: string): string {
  return s.replace(/[<>&]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;' })[c]!);
}

export function renderChart(title: string, points: readonly ChartPoint[]): string {
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const maxT = niceMax(Math.max(...points.map((p) => p.rowsPerSecond)));
  const maxL = niceMax(Math.max(...points.map((p) => (Number.isFinite(p.p99Ms) ? p.p99Ms : 0))));
  const slot = plotW / Math.max(1, points.length);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const y = PAD.top + plotH - (plotH * i) / 4;
    parts.push(`<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${y}" y2="${y}" stroke="#ddd"/>`);
    parts.push(
      `<text x="${PAD.left - 6}" y="${y + 4}" text-anchor="end" fill="#1f77b4">${Math.round((maxT * i) / 4)}</text>`,
    );
    parts.push(
      `<text x="${W - PAD.right + 6}" y="${y + 4}" fill="#d62728">${((maxL * i) / 4).toFixed(1)}</text>`,
    );
  }
  const line: string[] = [];
  points.forEach((p, i) => {
    const x = PAD.left + slot * i + slot * 0.2;
    const bw = slot * 0.6;
    const bh = (plotH * p.rowsPerSecond) / maxT;
    parts.push(`<rect x="${x}" y="${PAD.top + plotH - bh}" width="${bw}" height="${bh}" fill="#1f77b4"/>`);
    parts.push(`<text x="${x + bw / 2}" y="${H - PAD.bottom + 18}" text-anchor="middle">${p.shards}</text>`);
    if (Number.isFinite(p.p99Ms)) line.push(`${x + bw / 2},${PAD.top + plotH - (plotH * p.p99Ms) / maxL}`);
  });
  if (line.length > 0) {
    parts.push(`<polyline points="${line.join(' ')}" fill="none" stroke="#d62728" stroke-width="2"/>`);
    for (const pt of line) {
      const [x, y] = pt.split(',');
      parts.push(`<circle cx="${x}" cy="${y}" r="4" fill="#d62728"/>`);
    }
  }
  parts.push(`<text x="${W / 2}" y="${H - 12}" text-anchor="middle">shards</text>`);
  parts.push(
    `<text x="16" y="${PAD.top + plotH / 2}" transform="rotate(-90 16 ${PAD.top + plotH / 2})" text-anchor="middle" fill="#1f77b4">replicated rows/s</text>`,
  );
  parts.push(
    `<text x="${W - 14}" y="${PAD.top + plotH / 2}" transform="rotate(90 ${W - 14} ${PAD.top + plotH / 2})" text-anchor="middle" fill="#d62728">p99 latency (ms)</text>`,
  );
  parts.push('</svg>');
  return parts.join('\n');
}
