/**
 * The `weft-flanneld` command: flags → daemon, restarted in-process when the network config
 * changes, stopped by SIGTERM/SIGINT with its lease and dataplane kept for the next start.
 */
import { runMain } from '../cli/run-main.js';
import { weftVersion } from '../cli/version.js';
import { monotonicMs } from '../clock/index.js';
import { isWeftError, messageOf } from '../errors/index.js';
import { startHealthServer, type HealthServer } from '../health/index.js';
import { componentLogger, rootLogger } from '../log/index.js';
import { createRegistry } from '../metrics/index.js';
import { openNetlink } from '../netlink/index.js';
import { cleanupNode } from './cleanup.js';
import { Flanneld, openStoreFromFlags } from './daemon.js';
import { flanneldHelp, parseFlanneldFlags, type FlanneldFlags } from './flags.js';

/** How long /readyz stays 200 across an in-process restart while the new run gets ready. */
const CONFIG_RESTART_READY_GRACE_MS = 30_000;

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
    process.stdout.write(`weft-flanneld ${weftVersion()}\n`);
    return 0;
  }
  if (flags.logLevel) rootLogger().level = flags.logLevel;
  if (flags.cleanup) return cleanup(flags);

  const log = componentLogger('flanneld');
  // One registry and one health listener for the life of the process: an in-process restart
  // (config change) keeps the counters and never closes the port liveness probes use.
  const metrics = createRegistry({ processMetrics: true });
  let current: Flanneld | undefined;
  /** Until then, /readyz answers for the run that handed over (it was ready, its kernel state stays). */
  let carryReadyUntil = 0;
  let stopping = false;
  const stop = (sig: string) => {
    log.info({ signal: sig }, 'shutting down; the lease and the dataplane are kept');
    stopping = true;
    current?.stop();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));

  let health: HealthServer | undefined;
  if (flags.healthzPort > 0) {
    try {
      health = await startHealthServer({
        host: flags.healthzIp,
        port: flags.healthzPort,
        registry: metrics,
        checks: {
          '/healthz': () => ({ ok: true }),
          '/livez': () => ({ ok: true }),
          '/readyz': () => {
            if (current?.ready || monotonicMs() < carryReadyUntil) return { ok: true };
            return { ok: false, reason: current?.notReadyReason ?? 'starting' };
          },
        },
      });
    } catch (err) {
      log.fatal(
        { host: flags.healthzIp, port: flags.healthzPort, err: messageOf(err) },
        'cannot start the health listener',
      );
      return 1;
    }
    log.info({ host: health.host, port: health.port }, 'health listener up');
  }

  try {
    for (;;) {
      current = new Flanneld({ flags, logger: log, metrics, healthListener: false });
      try {
        const outcome = await current.run();
        if (outcome === 'stopped' || stopping) return 0;
        // A config change: the kernel state of this run stays in place while the next run
        // starts, so the node stays ready for a while, unless the next run cannot get there.
        carryReadyUntil = current.ready ? monotonicMs() + CONFIG_RESTART_READY_GRACE_MS : 0;
      } catch (err) {
        if (stopping) return 0;
        if (isWeftError(err)) log.fatal({ code: err.code, ...err.details }, err.message);
        else log.fatal({ err }, 'weft-flanneld failed');
        return 1;
      }
    }
  } finally {
    await health?.close();
  }
}

runMain('weft-flanneld', () => main(process.argv.slice(2)));
