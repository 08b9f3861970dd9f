/**
 * Every message the shard streams ever held, in stream order, although faults
 * discard history: `discardBelow` archives the messages before purging them
 * (what `max_entries` / `max_age` would drop after a long outage), and `read`
 * joins the archive with what the streams still keep. The lost-write checker
 * needs the whole history: a write is lost only if it never reached a stream.
 */
import { DeliverPolicy, type JetStreamManager } from '@nats-io/jetstream';
import { shardNumbers, streamName } from '../../src/nats/naming.ts';

const READ_TIMEOUT_MS = 60_000;

export interface HistoryMessage {
  readonly shard: number;
  readonly seq: number;
  /** The `Nats-Msg-Id` header (`<node>-<shard>-<seq>`). */
  readonly msgId: string | undefined;
  readonly data: Uint8Array;
}

export interface ReadHistory {
  /** Per shard (index 0 = shard 1), in stream order. */
  readonly shards: readonly (readonly HistoryMessage[])[];
  /** Messages that vanished without being archived: the history is incomplete there. */
  readonly gaps: readonly string[];
}

export class StreamHistory {
  readonly #streamPrefix: string;
  readonly #shards: number;
  readonly #archive = new Map<number, HistoryMessage[]>();
  readonly #gaps: string[] = [];

  constructor(streamPrefix: string, shards: number) {
    this.#streamPrefix = streamPrefix;
    this.#shards = shards;
  }

  /**
   * Archives the messages of `shard` below `seq`, then purges them from the
   * stream: its first kept message becomes `seq`. Returns how many were
   * purged, and the stream's last sequence just before.
   */
  async discardBelow(
    jsm: JetStreamManager,
    shard: number,
    seq: number,
  ): Promise<{ purged: number; lastSeq: number }> {
    const stream = streamName(this.#streamPrefix, shard);
    const info = await jsm.streams.info(stream);
    const upTo = Math.min(seq - 1, info.state.last_seq);
    await this.#archiveRange(jsm, shard, info.state.first_seq, upTo);
    const res = await jsm.streams.purge(stream, { seq });
    return { purged: res.purged, lastSeq: info.state.last_seq };
  }

  async read(jsm: JetStreamManager): Promise<ReadHistory> {
    const shards: HistoryMessage[][] = [];
    const gaps = [...this.#gaps];
    for (const shard of shardNumbers(this.#shards)) {
      const stream = streamName(this.#streamPrefix, shard);
      const info = await jsm.streams.info(stream);
      const archived = this.#archive.get(shard) ?? [];
      const next = (archived.at(-1)?.seq ?? 0) + 1;
      if (info.state.first_seq > next)
        gaps.push(
          `shard ${shard}: messages ${next}..${info.state.first_seq - 1} were discarded without being archived`,
        );
      const live = await this.#fetch(
        jsm,
        shard,
        Math.max(next, info.state.first_seq),
        info.state.last_seq,
        gaps,
      );
      shards.push([...archived, ...live]);
    }
    return { shards, gaps };
  }

  async #archiveRange(jsm: JetStreamManager, shard: number, firstKept: number, upTo: number): Promise<void> {
    let archived = this.#archive.get(shard);
    if (archived === undefined) this.#archive.set(shard, (archived = []));
    const next = (archived.at(-1)?.seq ?? 0) + 1;
    if (firstKept > next && upTo >= next)
      this.#gaps.push(
        `shard ${shard}: messages ${next}..${firstKept - 1} were discarded without being archived`,
      );
    archived.push(...(await this.#fetch(jsm, shard, Math.max(next, firstKept), upTo, this.#gaps)));
  }

  /** Messages `from..to` of the shard's stream through an ordered consumer (one request per message would be slow). */
  async #fetch(
    jsm: JetStreamManager,
    shard: number,
    from: number,
    to: number,
    gaps: string[],
  ): Promise<HistoryMessage[]> {
    const out: HistoryMessage[] = [];
    if (to < from) return out;
    const consumer = await jsm.jetstream().consumers.get(streamName(this.#streamPrefix, shard), {
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: from,
    });
    const messages = await consumer.consume({ max_messages: 1000 });
    // A message that never comes must not hang the run: what was not read by then is reported as a gap.
    const timer = setTimeout(() => void messages.stop(), READ_TIMEOUT_MS);
    let next = from;
    try {
      for await (const m of messages) {
        if (m.seq > next)
          gaps.push(`shard ${shard}: messages ${next}..${m.seq - 1} are missing from the stream`);
        out.push({ shard, seq: m.seq, msgId: m.headers?.get('Nats-Msg-Id'), data: m.data });
        next = m.seq + 1;
        if (m.seq >= to) break;
      }
    } finally {
      clearTimeout(timer);
      await messages.close();
    }
    if (next <= to) gaps.push(`shard ${shard}: messages ${next}..${to} could not be read`);
    return out;
  }
}
