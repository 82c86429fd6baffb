/**
 * The `weft-flanneld` command: flags → daemon, restarted in-process when the network config
 * changes, stopped by SIGTERM/SIGINT with its lease and dataplane kept for the next start.
 */
import { readFileSync } from 'node:fs';
import { isWeftError, messageOf } from '../errors/index.js';
import { componentLogger, rootLogger } from '../log/index.js';
import { openNetlink } from '../netlink/index.js';
import { cleanupNode } from './cleanup.js';
import { Flanneld, openStoreFromFlags } from './daemon.js';
import { flanneldHelp, parseFlanneldFlags, type FlanneldFlags } from './flags.js';

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
      version?: string;
    };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

async function cleanup(flags: FlanneldFlags): Promise<number> {
  const log = componentLogger('cleanup');
  const nl = await openNetlink({ logger: log });
  let store;
  try {
    store = await openStoreFromFlags(flags, log);
  } catch (err) {
    log.warn({ err: messageOf(err) }, 'registry unavailable; cleaning up without the network config');
  }
  try {
    const report = await cleanupNode({
      netlink: nl,
      ...(store && { store }),
      prefix: flags.etcdPrefix,
      subnetFile: flags.subnetFile,
      logger: log,
    });
    log.info(report, 'cleanup done');
    return report.errors.length ? 1 : 0;
  } finally {
    nl.close();
    await store?.close();
  }
}

async function main(argv: string[]): Promise<number> {
  let flags: FlanneldFlags;
  try {
    flags = parseFlanneldFlags(argv, process.env);
  } catch (err) {
    process.stderr.write(`weft-flanneld: ${messageOf(err)}\nRun weft-flanneld --help for the flags.\n`);
    return 2;
  }
  if (flags.help) {
    process.stdout.write(flanneldHelp());
    return 0;
  }
  if (flags.version) {
    process.stdout.write(`weft-flanneld ${version()}\n`);
    return 0;
  }
  if (flags.logLevel) rootLogger().level = flags.logLevel;
  if (flags.cleanup) return cleanup(flags);

  const log = componentLogger('flanneld');
  let current: Flanneld | undefined;
  let stopping = false;
  const stop = (sig: string) => {
    log.info({ signal: sig }, 'shutting down; the lease and the dataplane are kept');
    stopping = true;
    current?.stop();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));

  for (;;) {
    current = new Flanneld({ flags, logger: log });
    try {
      const outcome = await current.run();
      if (outcome === 'stopped' || stopping) return 0;
    } catch (err) {
      if (stopping) return 0;
      if (isWeftError(err)) log.fatal({ code: err.code, ...err.details }, err.message);
      else log.fatal({ err }, 'weft-flanneld failed');
      return 1;
    }
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Pending timers of libraries (grpc reconnects) must not hold the process after shutdown.
    setTimeout(() => process.exit(code), 2_000).unref();
  },
  (err: unknown) => {
    process.stderr.write(`weft-flanneld: ${messageOf(err)}\n`);
    process.exit(1);
  },
);
