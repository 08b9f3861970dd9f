/** Longest message-derived text in health output, characters. */
export const MAX_SAFE_TEXT = 300;

/** Control characters (C0, DEL, C1) and bidirectional marks and overrides. */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/**
 * Text that may come from a received message (a table or column name in a
 * schema-lag reason), made safe for health output and terminals: control and
 * bidirectional-override characters escaped as `\uXXXX`, and cut at `max`
 * characters with "…" (a publisher chooses these names and their length).
 */
export function safeText(text: string, max = MAX_SAFE_TEXT): string {
  const escaped = text.replace(UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return escaped.length > max ? `${escaped.slice(0, max - 1)}…` : escaped;
}
