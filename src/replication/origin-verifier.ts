import type { KeyObject } from 'node:crypto';
import type { InboundMessage } from './batch-applier.ts';
import { signatureFingerprint, verifyBatch } from './batch-signature.ts';
import { parseMsgId } from './msg-id.ts';

/** Where the public key of an origin's signature is found (NodeKeyRegistry). */
export interface OriginKeys {
  lookup(origin: number, fingerprint: string): Promise<KeyObject | undefined>;
}

/**
 * Decides whether a received batch was made by the node its id names
 * (batch-signature.ts), before deduplication or apply look at it: a batch
 * that fails is dead-lettered and never moves an origin's sequence.
 */
export class OriginVerifier {
  readonly #keys: OriginKeys;

  constructor(keys: OriginKeys) {
    this.#keys = keys;
  }

  /** Undefined when the batch is verified, else why it is refused. */
  async refusal(
    m: InboundMessage,
    signature: string | undefined,
    shard: number,
  ): Promise<string | undefined> {
    const id = parseMsgId(m.msgId);
    if (id === undefined) return 'origin not verified: no batch id (Nats-Msg-Id) of a node';
    if (id.shard !== shard) return `origin not verified: batch id names shard ${id.shard}`;
    if (signature === undefined) return `origin not verified: batch of node ${id.origin} is not signed`;
    const fingerprint = signatureFingerprint(signature);
    if (fingerprint === undefined) return `origin not verified: malformed signature of node ${id.origin}`;
    const key = await this.#keys.lookup(id.origin, fingerprint);
    if (key === undefined)
      return `origin not verified: node ${id.origin} has no registered key ${fingerprint}`;
    if (!verifyBatch(key, signature, m.msgId!, m.data))
      return `origin not verified: bad signature for node ${id.origin}`;
    return undefined;
  }
}
