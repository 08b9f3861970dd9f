/**
 * Splits a migration file into statements, and names what they mention. Pure.
 * A migration runs statement by statement so that a failure names the
 * statement; SQLite's own splitting is not exposed by better-sqlite3.
 */

export interface SqlStatement {
  /** The statement's text, without the closing semicolon, trimmed. */
  readonly text: string;
  /** 1-based line of the file where the statement starts. */
  readonly line: number;
}

interface Token {
  /** Lowercased word or quoted identifier, or a single punctuation character. */
  readonly value: string;
  readonly quoted: boolean;
}

/**
 * Reads `sql` into statements: quotes ('', "", ``, []) and comments (--, /* *\/)
 * are skipped over, and a CREATE TRIGGER's body (BEGIN ... END) keeps its
 * semicolons. Empty statements are dropped.
 */
export function splitStatements(sql: string): SqlStatement[] {
  const out: SqlStatement[] = [];
  let start = 0;
  let words: string[] = [];
  let depth = 0; // BEGIN ... END nesting inside a CREATE TRIGGER (CASE ... END too)
  let i = 0;
  const push = (end: number) => {
    // Leading blanks and comments belong to no statement: the text and line start at its first word.
    let from = start;
    for (;;) {
      while (from < end && /\s/.test(sql[from]!)) from++;
      const c = sql[from];
      const skip = c === '-' || c === '/' ? skipQuotedOrComment(sql, from) : from;
      if (skip === from) break;
      from = Math.min(skip, end);
    }
    const text = sql.slice(from, end).trim();
    if (text !== '' && stripComments(text).trim() !== '') out.push({ text, line: lineAt(sql, from) });
    start = end + 1;
    words = [];
    depth = 0;
  };
  while (i < sql.length) {
    const c = sql[i]!;
    const skip = skipQuotedOrComment(sql, i);
    if (skip > i) {
      i = skip;
      continue;
    }
    if (/[A-Za-z_]/.test(c)) {
      let j = i + 1;
      while (j < sql.length && /[A-Za-z0-9_$]/.test(sql[j]!)) j++;
      const w = sql.slice(i, j).toLowerCase();
      words.push(w);
      const trigger = isCreateTrigger(words);
      if (trigger && (w === 'begin' || w === 'case')) depth++;
      else if (trigger && w === 'end' && depth > 0) depth--;
      i = j;
      continue;
    }
    if (c === ';' && depth === 0) push(i);
    i++;
  }
  push(sql.length);
  return out;
}

/** CREATE [TEMP|TEMPORARY] TRIGGER ... */
function isCreateTrigger(words: readonly string[]): boolean {
  if (words[0] !== 'create') return false;
  const second = words[1] === 'temp' || words[1] === 'temporary' ? words[2] : words[1];
  return second === 'trigger';
}

/** The index after a quoted string, quoted identifier or comment starting at `i`, else `i`. */
function skipQuotedOrComment(sql: string, i: number): number {
  const c = sql[i];
  if (c === "'" || c === '"' || c === '`') {
    let j = i + 1;
    for (;;) {
      const k = sql.indexOf(c, j);
      if (k < 0) return sql.length;
      if (sql[k + 1] === c) {
        j = k + 2;
        continue;
      }
      return k + 1;
    }
  }
  if (c === '[') {
    const k = sql.indexOf(']', i + 1);
    return k < 0 ? sql.length : k + 1;
  }
  if (c === '-' && sql[i + 1] === '-') {
    const k = sql.indexOf('\n', i + 2);
    return k < 0 ? sql.length : k + 1;
  }
  if (c === '/' && sql[i + 1] === '*') {
    const k = sql.indexOf('*/', i + 2);
    return k < 0 ? sql.length : k + 2;
  }
  return i;
}

function stripComments(sql: string): string {
  let out = '';
  for (let i = 0; i < sql.length;) {
    const c = sql[i]!;
    const skip = skipQuotedOrComment(sql, i);
    if (skip > i && (c === '-' || c === '/')) {
      i = skip;
      out += ' ';
    } else if (skip > i) {
      out += sql.slice(i, skip);
      i = skip;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

function lineAt(sql: string, index: number): number {
  let n = 1;
  for (let i = 0; i < index; i++) if (sql.charCodeAt(i) === 10) n++;
  return n;
}

function tokens(sql: string): Token[] {
  const out: Token[] = [];
  for (let i = 0; i < sql.length;) {
    const c = sql[i]!;
    if (c === '"' || c === '`' || c === '[') {
      const end = skipQuotedOrComment(sql, i);
      const body = sql.slice(i + 1, end - 1);
      out.push({ value: (c === '[' ? body : body.replaceAll(c + c, c)).toLowerCase(), quoted: true });
      i = end;
      continue;
    }
    const skip = skipQuotedOrComment(sql, i);
    if (skip > i) {
      i = skip;
      continue;
    }
    if (/[A-Za-z_\u0080-\uffff]/.test(c)) {
      let j = i + 1;
      while (j < sql.length && /[A-Za-z0-9_$\u0080-\uffff]/.test(sql[j]!)) j++;
      out.push({ value: sql.slice(i, j).toLowerCase(), quoted: false });
      i = j;
      continue;
    }
    if (!/\s/.test(c)) out.push({ value: c, quoted: false });
    i++;
  }
  return out;
}

/**
 * Every identifier or word the statements mention, lowercased (SQLite's names are
 * case-insensitive). A table is touched by a migration when its name is among them:
 * a superset, which costs at most a needless capture reinstall.
 */
export function mentionedNames(sql: string): Set<string> {
  return new Set(tokens(sql).map((t) => t.value));
}

/**
 * Why a statement cannot be part of a replicated migration, or undefined. The file
 * runs inside one transaction that the node opens and commits, so transaction
 * control and statements SQLite refuses inside a transaction are out, and so are
 * HarmonyLite's own tables and triggers.
 */
export function refusedStatement(text: string): string | undefined {
  const t = tokens(text);
  const first = t[0]?.value;
  if (first === undefined) return undefined;
  if (['begin', 'commit', 'end', 'rollback', 'savepoint', 'release'].includes(first))
    return 'transaction control: the whole file already runs in one transaction';
  if (first === 'vacuum') return 'VACUUM cannot run inside a transaction';
  if (first === 'attach' || first === 'detach') return 'ATTACH and DETACH cannot run inside a transaction';
  if (first === 'pragma') return 'PRAGMA: settings are not replicated (set them in the application)';
  if (t.some((k) => k.value.startsWith('__harmonylite__')))
    return "HarmonyLite's own tables and triggers are not for migrations";
  return undefined;
}
