/** How every weft program ends: exit with main's code, and never hang on a library's timers. */
import { messageOf } from '../errors/index.js';

/**
 * Runs `main` and exits with its code. Pending timers of libraries (grpc reconnects of the etcd
 * client) must not hold a finished process, so it exits after `graceMs` at the latest; a throw
 * that escaped main is printed with the program's name and exits 1.
 */
export function runMain(program: string, main: () => Promise<number>, graceMs = 2_000): void {
  main().then(
    (code) => {
      process.exitCode = code;
      setTimeout(() => process.exit(code), graceMs).unref();
    },
    (err: unknown) => {
      process.stderr.write(`${program}: ${messageOf(err)}\n`);
      process.exit(1);
    },
  );
}
