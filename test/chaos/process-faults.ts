/**
 * Faults of processes and the network: kill -9 of a node or a server and its
 * restart, SIGSTOP/SIGCONT of either, a partition of a node (its proxies cut).
 */
import type { ChaosNode } from './chaos-cluster.ts';
import { sleep, type FaultContext } from './fault-context.ts';

export async function killNode(ctx: FaultContext, n: ChaosNode, outageMs: number): Promise<void> {
  ctx.note(`kill -9 node ${n.id} for ${outageMs} ms`);
  await ctx.cluster.stopNode(n, 'SIGKILL');
  await sleep(outageMs);
  await ctx.cluster.startNode(n);
  ctx.note(`node ${n.id} restarted`);
}

export async function pauseNode(ctx: FaultContext, n: ChaosNode, outageMs: number): Promise<void> {
  ctx.note(`SIGSTOP node ${n.id} for ${outageMs} ms`);
  n.cli!.kill('SIGSTOP');
  await sleep(outageMs);
  n.cli!.kill('SIGCONT');
}

export async function partitionNode(ctx: FaultContext, n: ChaosNode, outageMs: number): Promise<void> {
  ctx.note(`partition node ${n.id} for ${outageMs} ms`);
  for (const p of n.proxies) p.cut();
  await sleep(outageMs);
  for (const p of n.proxies) p.heal();
}

export async function killServer(ctx: FaultContext, index: number, outageMs: number): Promise<void> {
  const s = ctx.cluster.nats.servers[index]!;
  ctx.note(`kill -9 nats-server ${index + 1} for ${outageMs} ms`);
  s.kill('SIGKILL');
  await sleep(outageMs);
  await s.restart();
  ctx.note(`nats-server ${index + 1} restarted`);
}

export async function pauseServer(ctx: FaultContext, index: number, outageMs: number): Promise<void> {
  const s = ctx.cluster.nats.servers[index]!;
  ctx.note(`SIGSTOP nats-server ${index + 1} for ${outageMs} ms`);
  s.kill('SIGSTOP');
  await sleep(outageMs);
  s.kill('SIGCONT');
}
