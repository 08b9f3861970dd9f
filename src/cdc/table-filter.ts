/** Decides which user tables are captured and applied, from `include_tables` / `exclude_tables` globs. */
export class TableFilter {
  readonly #include: RegExp[];
  readonly #exclude: RegExp[];

  constructor(include: readonly string[], exclude: readonly string[]) {
    this.#include = include.map(globToRegExp);
    this.#exclude = exclude.map(globToRegExp);
  }

  /** Tables excluded here are skipped by design, both for capture and for apply (invariant 5). */
  accepts(table: string): boolean {
    if (this.#include.length > 0 && !this.#include.some((r) => r.test(table))) return false;
    return !this.#exclude.some((r) => r.test(table));
  }
}

/** `*` matches any run of characters, `?` one character; everything else is literal. */
export function globToRegExp(glob: string): RegExp {
  let source = '';
  for (const ch of glob) {
    if (ch === '*') source += '.*';
    else if (ch === '?') source += '.';
    else source += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${source}$`, 'su');
}
