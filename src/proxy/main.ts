/**
 * The `weft-proxy` command: flags → daemon, stopped by SIGTERM/SIGINT with the rules left in
 * place (a restart takes them over with its first full sync), or `--cleanup` to remove them.
 * Exit codes: 0 done, 1 failure, 2 bad flags.
 */
import { runMain } from '../cli/run-main.js';
import { weftVersion } from '../cli/version.js';
import { isWeftError, messageOf } from '../errors/index.js';
import { execRunner } from '../exec/index.js';
import { componentLogger, rootLogger } from '../log/index.js';
import { WeftProxy, cleanupAllModes } from './daemon.js';
import {
  parseProxyFlags,
  proxyHelp,
  resolveProxyConfig,
  type ProxyConfig,
  type ProxyFlags,
} from './flags.js';
import { registerProxyModes } from './modes.js';

async function main(argv: string[]): Promise<number> {
  let flags: ProxyFlags;
  let config: ProxyConfig;
  try {
    flags = parseProxyFlags(argv, process.env);
    if (flags.help) {
      process.stdout.write(proxyHelp());
      return 0;
    }
    if (flags.version) {
      process.stdout.write(`weft-proxy ${weftVersion()}\n`);
      return 0;
    }
    config = resolveProxyConfig(flags);
  } catch (err) {
    process.stderr.write(`weft-proxy: ${messageOf(err)}\nRun weft-proxy --help for the flags.\n`);
    return 2;
  }
  rootLogger().level = flags.logLevel;
  registerProxyModes({
    udpTimeoutMs: config.udpTimeoutMs,
    userspaceLimits: config.userspaceLimits,
    userspaceTcpIdleTimeoutMs: config.userspaceTcpIdleTimeoutMs,
  });

  if (flags.cleanup) {
    const log = componentLogger('cleanup');
    const report = await cleanupAllModes(config, execRunner(), log);
    log.info(report, 'cleanup done');
    return report.errors.length ? 1 : 0;
  }

  const log = componentLogger('proxy');
  const proxy = new WeftProxy({ config });
  let stopping: ((sig: string) => void) | undefined;
  const stopped = new Promise<string>((resolve) => (stopping = resolve));
  process.once('SIGTERM', () => stopping?.('SIGTERM'));
  process.once('SIGINT', () => stopping?.('SIGINT'));
  try {
    await proxy.start();
  } catch (err) {
    if (isWeftError(err)) log.fatal({ code: err.code, ...err.details }, err.message);
    else log.fatal({ err: messageOf(err) }, 'weft-proxy failed to start');
    return 1;
  }
  const sig = await stopped;
  log.info({ signal: sig }, 'shutting down; the rules are kept');
  await proxy.stop();
  return 0;
}

runMain('weft-proxy', () => main(process.argv.slice(2)));
