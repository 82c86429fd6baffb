/** Runs weftctl command lines in-process with captured output, for tests. */
import { COMMANDS, runWeftctl } from '../../src/weftctl/index.js';

/** What one command line printed and returned. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `argv` with `env` (nothing inherited) and `stdin` as standard input. */
export async function runCli(
  argv: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; stdin?: string } = {},
): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const code = await runWeftctl(
    argv,
    {
      stdout: (s) => void (stdout += s),
      stderr: (s) => void (stderr += s),
      readStdin: async () => opts.stdin ?? '',
      env: opts.env ?? {},
    },
    { commands: COMMANDS, version: 'test' },
  );
  return { code, stdout, stderr };
}
