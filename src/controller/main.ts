/**
 * The `weft-controller` command: flags → daemon, stopped by SIGTERM/SIGINT (it resigns the
 * leadership first, so a standby takes over at once; the slices stay). Exit codes: 0 done,
 * 1 failure, 2 bad flags.
 */
import { runMain } from '../cli/run-main.js';
import { weftVersion } from '../cli/version.js';
import { isWeftError, messageOf } from '../errors/index.js';
import { componentLogger, rootLogger } from '../log/index.js';
import { WeftController } from './daemon.js';
import {
  controllerHelp,
  parseControllerFlags,
  resolveControllerConfig,
  type ControllerConfig,
  type ControllerFlags,
} from './flags.js';

async function main(argv: string[]): Promise<number> {
  let flags: ControllerFlags;
  let config: ControllerConfig;
  try {
    flags = parseControllerFlags(argv, process.env);
    if (flags.help) {
      process.stdout.write(controllerHelp());
      return 0;
    }
    if (flags.version) {
      process.stdout.write(`weft-controller ${weftVersion()}\n`);
      return 0;
    }
    config = resolveControllerConfig(flags);
  } catch (err) {
    process.stderr.write(`weft-controller: ${messageOf(err)}\nRun weft-controller --help for the flags.\n`);
    return 2;
  }
  rootLogger().level = flags.logLevel;

  const log = componentLogger('controller');
  const controller = new WeftController({ config });
  let stopping: ((sig: string) => void) | undefined;
  const stopped = new Promise<string>((resolve) => (stopping = resolve));
  process.once('SIGTERM', () => stopping?.('SIGTERM'));
  process.once('SIGINT', () => stopping?.('SIGINT'));
  try {
    await controller.start();
  } catch (err) {
    if (isWeftError(err)) log.fatal({ code: err.code, ...err.details }, err.message);
    else log.fatal({ err: messageOf(err) }, 'weft-controller failed to start');
    return 1;
  }
  const sig = await stopped;
  log.info({ signal: sig }, 'shutting down; resigning the leadership, the slices are kept');
  await controller.stop();
  return 0;
}

runMain('weft-controller', () => main(process.argv.slice(2)));
