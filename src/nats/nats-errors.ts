/**
 * What a NATS or JetStream failure means, decided by the error classes nats.js
 * exports and the JetStream API's error codes (stable numbers of the server's
 * API), never by message text: a reworded message in a nats.js or server
 * upgrade must not silently change a code path.
 */
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { NoRespondersError, RequestError, TimeoutError } from '@nats-io/transport-node';

/** The server's codes for a cluster still forming or electing, or short of room for now. */
const TRANSIENT_API_CODES: ReadonlySet<number> = new Set([
  10005, // JSClusterNoPeersErrF: no suitable peers (yet) for placement
  10008, // JSClusterNotAvailErr: JetStream system temporarily unavailable
  10023, // JSInsufficientResourcesErr
]);

export function isStreamNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound;
}

/** A KV `update`/`create` lost a race: the key's revision moved on. */
export function isWrongLastSequence(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence ||
      err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

/** `err` and its causes, outermost first. */
function causes(err: unknown): unknown[] {
  const out: unknown[] = [];
  for (let e = err; e !== undefined && e !== null && out.length < 8; e = (e as { cause?: unknown }).cause)
    out.push(e);
  return out;
}

/**
 * Nobody answered on the subject. nats.js wraps it for JetStream requests and
 * publishes ("jetstream is not enabled", a class it does not export), keeping
 * the RequestError as the cause.
 */
export function isNoResponders(err: unknown): boolean {
  return causes(err).some(
    (e) => e instanceof NoRespondersError || (e instanceof RequestError && e.isNoResponders()),
  );
}

/** JetStream did not answer, or answered that it cannot serve the request now: worth retrying. */
export function isJetStreamUnavailable(err: unknown): boolean {
  if (err instanceof TimeoutError || isNoResponders(err)) return true;
  return err instanceof JetStreamApiError && (err.status === 503 || TRANSIENT_API_CODES.has(err.code));
}
