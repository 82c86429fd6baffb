#!/usr/bin/env node
// Import-cycle check for our own TypeScript sources. We keep it dependency-free: relative
// specifiers are the only edges that can form a cycle inside the tree, and NodeNext makes them
// explicit (`./x.js` names `./x.ts`).
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const roots = process.argv.slice(2).length ? process.argv.slice(2) : ['src'];
const files = [];
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (p.endsWith('.ts') && !p.endsWith('.d.ts')) files.push(resolve(p));
  }
}
roots.forEach(walk);

const importRe =
  /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s*['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g;
const graph = new Map();
for (const f of files) {
  const src = readFileSync(f, 'utf8');
  const deps = new Set();
  for (const m of src.matchAll(importRe)) {
    // `import type` never exists at run time, but a type cycle still couples modules; count it.
    const spec = m[1] ?? m[2];
    let target = resolve(dirname(f), spec).replace(/\.js$/, '.ts');
    try {
      if (statSync(target).isDirectory()) target = join(target, 'index.ts');
    } catch {
      /* resolved below */
    }
    if (files.includes(target)) deps.add(target);
  }
  graph.set(f, [...deps]);
}

const state = new Map();
const stack = [];
const cycles = [];
function visit(n) {
  state.set(n, 1);
  stack.push(n);
  for (const d of graph.get(n) ?? []) {
    if (state.get(d) === 1) cycles.push([...stack.slice(stack.indexOf(d)), d]);
    else if (!state.get(d)) visit(d);
  }
  stack.pop();
  state.set(n, 2);
}
for (const f of files) if (!state.get(f)) visit(f);

if (cycles.length) {
  for (const c of cycles)
    console.error('import cycle: ' + c.map((p) => relative(process.cwd(), p)).join(' -> '));
  process.exit(1);
}
console.log(`no import cycles in ${files.length} files`);
