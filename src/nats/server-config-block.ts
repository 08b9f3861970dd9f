/**
 * Just enough of nats-server's config syntax to find a top-level block in a
 * user's file and the keys it sets: comments (`#`, `//`), quoted strings,
 * nested `{}` and `[]`; a statement ends at a newline, `,` or `;` outside
 * them. Keys are case-insensitive, as in nats-server. Pure.
 */

export interface ConfigStatement {
  /** Lowercased key. */
  readonly key: string;
  /** The value's text, trimmed (without the `:`/`=` separator). */
  readonly value: string;
  /** Offsets of the value in the scanned text. */
  readonly valueStart: number;
  readonly valueEnd: number;
}

/** The top-level statements of `text` (a file, or a block's body). */
export function configStatements(text: string): ConfigStatement[] {
  const out: ConfigStatement[] = [];
  let i = 0;
  const n = text.length;
  const skipSpace = (newlines: boolean): void => {
    for (;;) {
      const c = text[i];
      if (c === '#' || (c === '/' && text[i + 1] === '/')) {
        while (i < n && text[i] !== '\n') i++;
      } else if (
        c === ' ' ||
        c === '\t' ||
        c === '\r' ||
        (newlines && (c === '\n' || c === ',' || c === ';'))
      ) {
        i++;
      } else return;
    }
  };
  /** Moves past the value starting at i: to the end of its statement at depth 0. */
  const skipValue = (): void => {
    let depth = 0;
    while (i < n) {
      const c = text[i]!;
      if (c === '"' || c === "'") {
        const q = c;
        for (i++; i < n && text[i] !== q; i++) if (text[i] === '\\') i++;
        i++;
      } else if (c === '#' || (c === '/' && text[i + 1] === '/')) {
        while (i < n && text[i] !== '\n') i++;
      } else if (c === '{' || c === '[' || c === '(') {
        depth++;
        i++;
      } else if (c === '}' || c === ']' || c === ')') {
        if (depth === 0) return; // the end of the enclosing block: not ours
        depth--;
        i++;
        if (depth === 0 && c === '}') return; // `key { ... }` needs no separator after it
      } else if (depth === 0 && (c === '\n' || c === ',' || c === ';')) {
        return;
      } else i++;
    }
  };
  for (;;) {
    skipSpace(true);
    if (i >= n) return out;
    const keyStart = i;
    while (i < n && /[^\s:={}[\],;#"']/.test(text[i]!)) i++;
    if (i === keyStart) {
      // Not a key (stray punctuation): skip it as a value.
      skipValue();
      i = Math.max(i, keyStart + 1);
      continue;
    }
    const key = text.slice(keyStart, i).toLowerCase();
    skipSpace(false);
    if (text[i] === ':' || text[i] === '=') i++;
    skipSpace(false);
    const valueStart = i;
    skipValue();
    out.push({ key, value: text.slice(valueStart, i).trim(), valueStart, valueEnd: i });
  }
}

/** The body (between the braces) of the last top-level `name { ... }` block of `text`, if any. */
export function topLevelBlock(text: string, name: string): string | undefined {
  const found = configStatements(text).filter((s) => s.key === name.toLowerCase() && s.value.startsWith('{'));
  const last = found[found.length - 1];
  return last === undefined ? undefined : last.value.slice(1, last.value.lastIndexOf('}'));
}
