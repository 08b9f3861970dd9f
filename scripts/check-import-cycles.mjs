#!/usr/bin/env node
// Fails when the folders of src/ import each other in a cycle (for example
// node -> metrics -> node): the module graph stays one-way. Type-only imports
// count too, since they tie the folders' meanings together all the same.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

const ROOT = resolve('src');

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** The folder a file belongs to: its first segment under src/ (files at the root are their own unit). */
const unitOf = (file) => {
  const parts = relative(ROOT, file).split(sep);
  return parts.length === 1 ? parts[0].replace(/\.ts$/, '') : parts[0];
};

const edges = new Map();
const why = new Map();
const units = new Set();
for (const file of walk(ROOT)) {
  const from = unitOf(file);
  units.add(from);
  const text = readFileSync(file, 'utf8');
  for (const m of text.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+'(\.[^']+)'/gms)) {
    const to = unitOf(resolve(dirname(file), m[1]));
    if (to === from) continue;
    if (!edges.has(from)) edges.set(from, new Set());
    edges.get(from).add(to);
    const key = `${from}->${to}`;
    if (!why.has(key)) why.set(key, `${relative('.', file)} imports ${m[1]}`);
  }
}

// Tarjan's strongly connected components: any component of two or more folders is a cycle.
let index = 0;
const idx = new Map();
const low = new Map();
const stack = [];
const on = new Set();
const cycles = [];
function strong(v) {
  idx.set(v, index);
  low.set(v, index++);
  stack.push(v);
  on.add(v);
  for (const w of edges.get(v) ?? []) {
    if (!idx.has(w)) {
      strong(w);
      low.set(v, Math.min(low.get(v), low.get(w)));
    } else if (on.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
  }
  if (low.get(v) === idx.get(v)) {
    const scc = [];
    let w;
    do {
      w = stack.pop();
      on.delete(w);
      scc.push(w);
    } while (w !== v);
    if (scc.length > 1) cycles.push(scc);
  }
}
for (const v of edges.keys()) if (!idx.has(v)) strong(v);

if (cycles.length === 0) {
  console.log(`import graph of src/: ${units.size} folders and root files, no cycle`);
  process.exit(0);
}
for (const scc of cycles) {
  console.error(`import cycle between src/ folders: ${scc.sort().join(', ')}`);
  for (const from of scc)
    for (const to of edges.get(from) ?? [])
      if (scc.includes(to)) console.error(`  ${from} -> ${to}: ${why.get(`${from}->${to}`)}`);
}
process.exit(1);
