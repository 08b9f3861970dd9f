/**
 * `GET /replicated?after=<global change id>&nodes=all|quorum|N&timeout=5s` on
 * the node's health listener: 200 with the positions once the node's changes
 * up to `after` are on enough nodes, 504 when the timeout passes first, 400
 * for bad parameters. `after=last` means the last change captured here.
 */
import type { RequestHandler } from '../metrics/http-endpoint.ts';
import { parseDurationMs, parseNodesWanted, type WriteWaiter } from './write-waiter.ts';

const DEFAULT_TIMEOUT_MS = 5000;
const MAX_TIMEOUT_MS = 300_000;

export function replicatedHandler(waiter: () => WriteWaiter | undefined): RequestHandler {
  return async (req, res) => {
    const send = (code: number, body: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(`${JSON.stringify(body)}\n`);
    };
    if (req.method !== 'GET') return send(405, { error: 'GET only' });
    const params = new URL(req.url ?? '/', 'http://x').searchParams;
    const afterParam = params.get('after');
    const nodes = parseNodesWanted(params.get('nodes') ?? 'all');
    const timeoutMs = parseDurationMs(params.get('timeout') ?? `${DEFAULT_TIMEOUT_MS}`);
    if (afterParam === null || !/^(\d{1,15}|last)$/.test(afterParam))
      return send(400, { error: 'after must be a global change id (or "last")' });
    if (nodes === undefined) return send(400, { error: 'nodes must be all, quorum or a number of nodes' });
    if (timeoutMs === undefined || timeoutMs > MAX_TIMEOUT_MS)
      return send(400, { error: 'timeout must be a duration such as 5s or 500ms, at most 5m' });
    const w = waiter();
    if (w === undefined) return send(503, { error: 'the node is starting' });
    const r = await w.wait(afterParam === 'last' ? w.lastChangeId() : Number(afterParam), nodes, timeoutMs);
    send(r.reached ? 200 : 504, r);
  };
}
