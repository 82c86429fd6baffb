#!/usr/bin/env node
// Runs tap and ends with a plain "N passed, N failed" line, which CI reads in any language.
// tap's own closing line is `# { total: N, pass: N, fail: N }`-shaped.
import { spawn } from 'node:child_process';

const child = spawn('npx', ['tap', ...process.argv.slice(2)], { stdio: ['ignore', 'pipe', 'inherit'] });
let tail = '';
child.stdout.on('data', (b) => {
  process.stdout.write(b);
  tail = (tail + b.toString()).slice(-4096);
});
child.on('close', (code) => {
  const m = tail.match(/#\s*\{\s*total:\s*(\d+)[^}]*\}/g);
  const last = m?.at(-1) ?? '';
  const num = (k) => Number(last.match(new RegExp(`${k}:\\s*(\\d+)`))?.[1] ?? 0);
  const total = num('total');
  const pass = num('pass');
  const skip = num('skip') + num('todo');
  const failed = num('fail') || (code ? Math.max(1, total - pass - skip) : 0);
  console.log(`\ntests: ${pass} passed, ${failed} failed, ${skip} skipped`);
  process.exit(code ?? 1);
});
