/**
 * `Nats-Msg-Id` of a change batch: `<node>-<shard>-<seq>`. JetStream drops a
 * retried batch within its duplicate window; receivers drop one that lands
 * later by comparing `seq` with the highest they applied from that node and
 * shard (invariant 1). Pure.
 */
export interface BatchId {
  readonly origin: number;
  readonly shard: number;
  readonly seq: number;
}

export function formatMsgId(id: BatchId): string {
  return `${id.origin}-${id.shard}-${id.seq}`;
}

/** undefined for ids not made by us (a hand-published message is still applied or dead-lettered on its content). */
export function parseMsgId(msgId: string | undefined): BatchId | undefined {
  if (msgId === undefined) return undefined;
  const m = /^(\d{1,16})-(\d{1,6})-(\d{1,16})$/.exec(msgId);
  if (m === null) return undefined;
  const id = { origin: Number(m[1]), shard: Number(m[2]), seq: Number(m[3]) };
  return Number.isSafeInteger(id.origin) && Number.isSafeInteger(id.seq) ? id : undefined;
}
