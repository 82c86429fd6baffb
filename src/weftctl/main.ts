/** The `weftctl` command. Exit codes: 0 success, 1 error, 2 misuse. */
import { runMain } from '../cli/run-main.js';
import { weftVersion } from '../cli/version.js';
import { COMMANDS } from './commands/index.js';
import { runWeftctl } from './run.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

// The etcd client's reconnect timers must not hold a finished command for long.
runMain(
  'weftctl',
  () =>
    runWeftctl(
      process.argv.slice(2),
      {
        stdout: (t) => void process.stdout.write(t),
        stderr: (t) => void process.stderr.write(t),
        readStdin,
        env: process.env,
      },
      { commands: COMMANDS, version: weftVersion() },
    ),
  1_000,
);
