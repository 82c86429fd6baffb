/**
 * The weft-cni executable: `bin/weft-cni` runs this file. A runtime starts it once per pod
 * operation, so it imports only the plugin (no logger, no metrics) to keep startup short.
 */
import { runPlugin } from './plugin.js';

async function readStdin(): Promise<string> {
  // VERSION may be run by hand from a terminal, where waiting for stdin would hang.
  if (process.stdin.isTTY) return '';
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

const reply = await runPlugin({ env: process.env, stdin: await readStdin() });
if (reply.stderr) process.stderr.write(reply.stderr);
if (reply.stdout) process.stdout.write(reply.stdout);
// exitCode rather than exit(): exit() can cut off a stdout write still queued to a pipe.
process.exitCode = reply.exitCode;
