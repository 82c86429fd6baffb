/**
 * weft-cni's commands. A call is a function from (environment, stdin) to (exit code, stdout,
 * stderr), so every path, error replies included, is testable without a process or a kernel.
 */
import { readFile } from 'node:fs/promises';
import { isWeftError, messageOf } from '../errors/index.js';
import { parseSubnetEnv, type SubnetEnv } from '../flanneld/subnet-env.js';
import type { Store } from '../registry/index.js';
import type * as AttachmentModule from './attachment.js';
import type { RegistryOpener, RegistryTarget } from './attachment.js';
import type { PodIdentity } from './cni-args.js';
import { CniError, CniErrorCodes, toCniError } from './cni-error.js';
import { parseCallEnv, parseCommand, type CniCallEnv, type Env } from './cni-env.js';
import { buildDelegateConfig, type DelegateConfig } from './delegate-config.js';
import { loadDelegateConfig, removeDelegateConfig, saveDelegateConfig } from './delegate-store.js';
import { execDelegate, type DelegateRunner } from './invoke.js';
import {
  LATEST_VERSION,
  SUPPORTED_VERSIONS,
  configFieldError,
  decodeStdin,
  parseNetConf,
  peekCniVersion,
  versionAtLeast,
  type CniNetConf,
  type JsonObject,
} from './net-conf.js';

/** Inputs of one plugin call. */
export interface PluginInput {
  /** The process environment (CNI_* variables; the rest is passed on to the delegate). */
  env: Env;
  /** Everything read from stdin. */
  stdin: string;
  /** Runs delegate plugins. Default: {@link execDelegate}, which executes them from CNI_PATH. */
  runDelegate?: DelegateRunner;
  /**
   * Opens the registry of the `weftRegistry` section. Default: the daemons' own opener (etcd or
   * Redis), with short deadlines. Tests pass a memory store.
   */
  openRegistry?: RegistryOpener;
  /** The host name, the default `weftRegistry.nodeName`. Default `os.hostname()`. */
  hostname?: () => string;
}

/** What the process should do when the call is over. */
export interface PluginReply {
  /** 0 on success, 1 on any error (the spec only asks for non-zero). */
  exitCode: number;
  /** The result or error JSON (with a trailing newline), or '' when the command prints nothing. */
  stdout: string;
  /** Diagnostics for the runtime's log, the delegate's own included. */
  stderr: string;
}

/** The VERSION reply. */
export interface VersionReply {
  cniVersion: string;
  supportedVersions: string[];
}

/** The reply to VERSION: the version asked for when it is one of ours, else the latest. */
export function versionReply(stdin: string): VersionReply {
  return { cniVersion: peekVersion(stdin) ?? LATEST_VERSION, supportedVersions: [...SUPPORTED_VERSIONS] };
}

function peekVersion(stdin: string): string | undefined {
  try {
    return peekCniVersion(JSON.parse(stdin));
  } catch {
    return undefined;
  }
}

const ABOUT = `weft-cni: flannel-compatible CNI plugin; CNI versions ${SUPPORTED_VERSIONS.join(', ')}\n`;

/** Runs one CNI call. Never throws: every failure becomes CNI error JSON on stdout. */
export async function runPlugin(input: PluginInput): Promise<PluginReply> {
  const log: string[] = [];
  // Error replies carry the config's version whenever stdin names one we speak.
  const replyVersion = peekVersion(input.stdin) ?? LATEST_VERSION;
  try {
    if (!input.env.CNI_COMMAND) log.push(ABOUT);
    if (parseCommand(input.env) === 'VERSION') {
      return { exitCode: 0, stdout: `${JSON.stringify(versionReply(input.stdin))}\n`, stderr: '' };
    }
    const call = parseCallEnv(input.env);
    const conf = parseNetConf(decodeStdin(input.stdin));
    const ctx: CallContext = {
      call,
      conf,
      env: input.env,
      run: input.runDelegate ?? execDelegate,
      log,
      ...(input.openRegistry && { openRegistry: input.openRegistry }),
      ...(input.hostname && { hostname: input.hostname }),
    };
    let stdout = '';
    switch (call.command) {
      case 'ADD':
        stdout = await cmdAdd(ctx);
        break;
      case 'DEL':
        await cmdDel(ctx);
        break;
      case 'CHECK':
        await cmdCheck(ctx);
        break;
    }
    return { exitCode: 0, stdout, stderr: log.join('') };
  } catch (err) {
    const e = toCniError(err);
    return { exitCode: 1, stdout: `${JSON.stringify(e.toJson(replyVersion))}\n`, stderr: log.join('') };
  }
}

interface CallContext {
  call: CniCallEnv;
  conf: CniNetConf;
  env: Env;
  run: DelegateRunner;
  /** stderr lines, written when the call ends. */
  log: string[];
  openRegistry?: RegistryOpener;
  hostname?: () => string;
}

/** A call that records (or removes) a pod attachment. */
interface AttachmentCall {
  mod: typeof AttachmentModule;
  pod: PodIdentity;
  target: RegistryTarget;
  key: string;
}

/**
 * The attachment this call is about, or undefined when the config has no `weftRegistry` section
 * or CNI_ARGS names no pod: then weft-cni behaves as flannel's plugin. The modules are loaded
 * only here, so such calls never load a registry client. Throws for a bad section or bad
 * CNI_ARGS before anything is allocated.
 */
async function attachmentCall(ctx: CallContext): Promise<AttachmentCall | undefined> {
  const section = ctx.conf.weftRegistry;
  if (!section) return undefined;
  const mod = await import('./attachment.js');
  const target = mod.registryTarget(section, ctx.hostname);
  const { parseCniArgs, podIdentity } = await import('./cni-args.js');
  const pod = podIdentity(parseCniArgs(ctx.env.CNI_ARGS));
  if (!pod) return undefined;
  return { mod, pod, target, key: mod.attachmentKey(target, pod) };
}

/** Runs `fn` with the registry open; closes it whatever happens. Failures become CNI errors. */
async function withRegistry<T>(
  ctx: CallContext,
  att: AttachmentCall,
  what: string,
  fn: (store: Store) => Promise<T>,
): Promise<T> {
  const { lineLogger } = await import('../log/index.js');
  const logger = lineLogger('warn', (line) => ctx.log.push(line)).child({ component: 'weft-cni' });
  let store: Store | undefined;
  try {
    store = await (ctx.openRegistry ?? att.mod.openRegistry)(att.target.flags, logger);
    return await fn(store);
  } catch (err) {
    throw att.mod.registryError(`${what} ${att.key}`, err);
  } finally {
    await store?.close().catch(() => undefined);
  }
}

/**
 * subnet.env, or undefined when the file does not exist. A missing file is the normal state of
 * a node whose daemon has not started yet, hence TRY_AGAIN_LATER where it is needed.
 */
async function readSubnetEnv(conf: CniNetConf): Promise<SubnetEnv | undefined> {
  let text: string;
  try {
    text = await readFile(conf.subnetFile, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CniError(
      CniErrorCodes.IO_FAILURE,
      `failed to read subnetFile ${conf.subnetFile}: ${messageOf(err)}`,
    );
  }
  try {
    return parseSubnetEnv(text);
  } catch (err) {
    if (!isWeftError(err)) throw err;
    throw new CniError(
      CniErrorCodes.DECODING_FAILURE,
      `failed to decode subnetFile ${conf.subnetFile}: ${err.message}`,
    );
  }
}

async function requireSubnetEnv(conf: CniNetConf): Promise<SubnetEnv> {
  const env = await readSubnetEnv(conf);
  if (env) return env;
  throw new CniError(
    CniErrorCodes.TRY_AGAIN_LATER,
    `subnetFile ${conf.subnetFile} does not exist yet: is weft-flanneld running on this node?`,
  );
}

/** The saved config for DEL and CHECK, stamped with this call's version and prevResult. */
function forFollowUp(config: DelegateConfig, conf: CniNetConf): DelegateConfig {
  const out: DelegateConfig = { ...config, cniVersion: conf.cniVersion };
  delete out.prevResult;
  if (conf.prevResult) out.prevResult = conf.prevResult;
  return out;
}

/**
 * The delegate config saved at ADD, or one rebuilt from the current subnet.env when none was
 * saved (a container added before the data dir was wiped, or a repeated DEL). Undefined when
 * neither exists.
 */
async function followUpConfig(ctx: CallContext): Promise<DelegateConfig | undefined> {
  const { conf, call } = ctx;
  const loaded = await loadDelegateConfig(conf.dataDir, call.containerId);
  if (loaded.state === 'found') return loaded.config;
  if (loaded.state === 'corrupt')
    ctx.log.push(`weft-cni: ignoring saved delegate config: ${loaded.reason}\n`);
  const env = await readSubnetEnv(conf);
  return env ? buildDelegateConfig(conf, env) : undefined;
}

async function cmdAdd(ctx: CallContext): Promise<string> {
  const { conf, call } = ctx;
  const att = await attachmentCall(ctx);
  const config = buildDelegateConfig(conf, await requireSubnetEnv(conf));
  // Saved before the delegate runs: after a failed ADD the runtime calls DEL, which must undo
  // whatever part of the ADD the delegate did.
  await saveDelegateConfig(conf.dataDir, call.containerId, config);
  const out = await ctx.run({ command: 'ADD', config, env: ctx.env, path: call.path });
  if (out.stderr) ctx.log.push(out.stderr);
  const result = addResult(config.type, out.stdout, conf.cniVersion);
  if (att) {
    try {
      const value = att.mod.attachmentJson(
        att.pod,
        att.target.nodeName,
        call.containerId,
        att.mod.resultIps(result),
      );
      await withRegistry(ctx, att, 'recording', (store) => att.mod.writeAttachment(store, att.key, value));
    } catch (err) {
      // A pod whose address no record announces would be unreachable through Services: fail, so
      // the runtime retries, and give the address back now rather than hold it until its DEL.
      await releaseAfterFailedAdd(ctx, config);
      throw err;
    }
  }
  return `${JSON.stringify(result)}\n`;
}

/** Undoes the delegate's ADD (best effort: the runtime's DEL after a failed ADD retries it). */
async function releaseAfterFailedAdd(ctx: CallContext, config: DelegateConfig): Promise<void> {
  const { conf, call } = ctx;
  try {
    const out = await ctx.run({
      command: 'DEL',
      config: forFollowUp(config, conf),
      env: ctx.env,
      path: call.path,
    });
    if (out.stderr) ctx.log.push(out.stderr);
    await removeDelegateConfig(conf.dataDir, call.containerId);
  } catch (err) {
    ctx.log.push(
      `weft-cni: ADD ${call.containerId}: releasing after the failure failed too: ${messageOf(err)}\n`,
    );
  }
}

/** The delegate's result, checked to be a result of this call's version. */
function addResult(type: string, stdout: string, cniVersion: string): JsonObject {
  let result: unknown;
  try {
    result = JSON.parse(stdout);
  } catch (err) {
    throw new CniError(
      CniErrorCodes.DELEGATE_BAD_OUTPUT,
      `delegate ${type} ADD printed no JSON result: ${messageOf(err)}`,
      stdout.slice(0, 2000),
    );
  }
  if (typeof result !== 'object' || result === null || Array.isArray(result)) {
    throw new CniError(CniErrorCodes.DELEGATE_BAD_OUTPUT, `delegate ${type} ADD printed no JSON object`);
  }
  const { cniVersion: got, ...rest } = result as JsonObject;
  if (got !== undefined && got !== cniVersion) {
    throw new CniError(
      CniErrorCodes.DELEGATE_BAD_OUTPUT,
      `delegate ${type} ADD returned a result of cniVersion ${JSON.stringify(got)}, expected ${cniVersion}`,
    );
  }
  return { cniVersion, ...rest };
}

async function cmdDel(ctx: CallContext): Promise<void> {
  const { conf, call } = ctx;
  const att = await attachmentCall(ctx);
  if (att) {
    // First, and failing the DEL when the registry cannot be reached: the address must not be
    // released (and given to another pod) while a record still announces it for this one.
    const outcome = await withRegistry(ctx, att, 'removing', (store) =>
      att.mod.removeAttachment(store, att.key, call.containerId),
    );
    if (outcome === 'other-container') {
      ctx.log.push(
        `weft-cni: DEL ${call.containerId}: ${att.key} belongs to another container of the pod; left in place\n`,
      );
    }
  }
  const config = await followUpConfig(ctx);
  if (config) {
    const out = await ctx.run({
      command: 'DEL',
      config: forFollowUp(config, conf),
      env: ctx.env,
      path: call.path,
    });
    if (out.stderr) ctx.log.push(out.stderr);
  } else {
    // Nothing saved and no lease to rebuild from: this node never set the container up, or a
    // previous DEL finished. DEL must succeed then.
    ctx.log.push(
      `weft-cni: DEL ${call.containerId}: no saved delegate config and no subnetFile; nothing to do\n`,
    );
  }
  // Only after the delegate succeeded: a failed DEL is retried and needs the config again.
  await removeDelegateConfig(conf.dataDir, call.containerId);
}

async function cmdCheck(ctx: CallContext): Promise<void> {
  const { conf, call } = ctx;
  if (!versionAtLeast(conf.cniVersion, '0.4.0')) {
    throw new CniError(
      CniErrorCodes.INCOMPATIBLE_VERSION,
      `incompatible CNI version: field cniVersion: CHECK needs 0.4.0 or later, got ${conf.cniVersion}`,
    );
  }
  if (!conf.prevResult) throw configFieldError('prevResult', 'is required for CHECK');
  const att = await attachmentCall(ctx);
  if (att) {
    const current = await withRegistry(ctx, att, 'checking', (store) => store.get(att.key));
    const owner = current && att.mod.storedContainerId(current.value);
    if (owner !== call.containerId) {
      throw new CniError(
        CniErrorCodes.REGISTRY_FAILED,
        current
          ? `weftRegistry: ${att.key} belongs to container ${JSON.stringify(owner ?? '?')}, not to ${call.containerId}`
          : `weftRegistry: ${att.key} is missing (container ${call.containerId})`,
      );
    }
  }
  const config = (await followUpConfig(ctx)) ?? buildDelegateConfig(conf, await requireSubnetEnv(conf));
  const out = await ctx.run({
    command: 'CHECK',
    config: forFollowUp(config, conf),
    env: ctx.env,
    path: call.path,
  });
  if (out.stderr) ctx.log.push(out.stderr);
}
