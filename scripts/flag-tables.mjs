#!/usr/bin/env node
/**
 * Rewrites the flag tables in README.md from the programs' real `--help` output, so the
 * reference cannot drift from the code. Run after `npx tsc -p tsconfig.build.json`:
 *   node scripts/flag-tables.mjs          rewrite README.md
 *   node scripts/flag-tables.mjs --check  exit 1 when README.md is out of date
 * A table sits between `<!-- BEGIN GENERATED: <program> --help -->` and `<!-- END GENERATED -->`.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

const PROGRAMS = {
  'weft-flanneld': 'dist/src/flanneld/main.js',
  'weft-proxy': 'dist/src/proxy/main.js',
  'weft-controller': 'dist/src/controller/main.js',
  weftctl: 'dist/src/weftctl/main.js',
};
const README = 'README.md';

/** The flags of one `--help` text: head line, description lines, then `[default: …] [env: …]`. */
export function parseHelp(text) {
  const flags = [];
  let cur;
  for (const line of text.split('\n')) {
    const head = /^ {2}(--[\w-]+)(?:, (-\w))?(?: (<[^>]+>))?$/.exec(line);
    if (head) {
      cur = { flag: head[1], alias: head[2], metavar: head[3], desc: [], def: '', env: '' };
      flags.push(cur);
      continue;
    }
    if (!cur) continue;
    const meta = /^ {6}\[default: (.*?)\](?: \[env: (\S+)\])?$/.exec(line);
    if (meta) {
      cur.def = meta[1];
      cur.env = meta[2] ?? '';
      cur = undefined;
    } else if (/^ {6}\S/.test(line)) cur.desc.push(line.trim());
  }
  return flags;
}

const cell = (s) => s.replace(/\|/g, '\\|');
const code = (s) => (s === '' ? '' : `\`${s}\``);

export function table(flags) {
  const rows = flags.map((f) => {
    const name = [f.flag + (f.metavar ? ` ${f.metavar}` : ''), f.alias].filter(Boolean).map(code).join(', ');
    const def = f.def === 'none' ? 'none' : code(f.def);
    return `| ${cell(name)} | ${cell(def)} | ${code(f.env)} | ${cell(f.desc.join(' '))} |`;
  });
  return ['| flag | default | environment | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

const check = process.argv.includes('--check');
let readme = readFileSync(README, 'utf8');
const before = readme;
for (const [program, main] of Object.entries(PROGRAMS)) {
  const begin = `<!-- BEGIN GENERATED: ${program} --help -->`;
  const end = '<!-- END GENERATED -->';
  const at = readme.indexOf(begin);
  if (at < 0) continue;
  const stop = readme.indexOf(end, at);
  if (stop < 0) throw new Error(`${README}: "${begin}" has no "${end}"`);
  const help = execFileSync(process.execPath, [main, '--help'], { encoding: 'utf8' });
  const flags = parseHelp(help);
  if (flags.length === 0) throw new Error(`${program} --help: no flags found`);
  readme = `${readme.slice(0, at + begin.length)}\n${table(flags)}\n${readme.slice(stop)}`;
}
if (check) {
  if (readme !== before) {
    console.error(`${README}: flag tables are out of date; run node scripts/flag-tables.mjs`);
    process.exit(1);
  }
} else if (readme !== before) writeFileSync(README, readme);
