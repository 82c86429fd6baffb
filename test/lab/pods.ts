/**
 * Pods of the lab: what they are, how they are named, how weft-cni's answers are read, and the
 * two small programs that give pods something to talk to (a TCP responder and its client).
 * The operations themselves are methods of the Lab, which owns the namespaces and processes.
 */
import { ErrorCodes, WeftError } from '../../src/errors/index.js';

/** A pod: a namespace of its own, wired into its node by weft-cni ADD. */
export interface LabPod {
  /** The pod's name, unique on its node; also its Kubernetes name. */
  readonly name: string;
  /** Its Kubernetes namespace (not a network namespace: that is `netns`). Default `default`. */
  readonly namespace: string;
  /** The labels of its Pod object. */
  readonly labels: Readonly<Record<string, string>>;
  /** The container ports of its Pod object. */
  readonly ports: readonly LabContainerPort[];
  /** The name of the node it runs on (`node1`). */
  readonly node: string;
  /** Its namespace, `<run>-n<K>-<name>`, so teardown and crash clean-up find it by run id. */
  readonly netns: string;
  /** Its IPv4 address, from the node's lease (without prefix length). */
  readonly ip: string;
  readonly prefixLength: number;
  /** The pod's gateway: the node's bridge (cni0), the lease's first host. */
  readonly gateway: string;
  /** The interface inside `netns`. */
  readonly ifname: string;
  /** CNI_CONTAINERID of its ADD, which keys host-local's reservation and the saved config. */
  readonly containerId: string;
  /** The result ADD printed; passed back as prevResult on DEL (and usable for CHECK). */
  readonly result: Readonly<Record<string, unknown>>;
}

/** A container port of a lab pod's Pod object. */
export interface LabContainerPort {
  /** An IANA_SVC_NAME, for Services whose targetPort names it. */
  name?: string;
  containerPort: number;
  /** Default TCP. */
  protocol?: 'TCP' | 'UDP';
}

/** Options of {@link Lab.addPod}. */
export interface AddPodOptions {
  /** Labels of the Pod object the lab declares (Services select pods by them). Default none. */
  labels?: Readonly<Record<string, string>>;
  /** Container ports of the Pod object. Default none. */
  ports?: readonly LabContainerPort[];
  /** Kubernetes namespace of the Pod object (and of K8S_POD_NAMESPACE). Default `default`. */
  namespace?: string;
  /** CNI_IFNAME: the pod's interface. Default `eth0`. */
  ifname?: string;
  /** CNI_CONTAINERID. Default `<run>-<node>-<name>`. */
  containerId?: string;
  /**
   * Fields merged (shallowly) over the node's network config, {@link Lab.cniConfig}, e.g.
   * `{ delegate: { bridge: 'cni1' } }`. Its paths stay per node unless given here.
   */
  conf?: Record<string, unknown>;
  /** Kill the plugin after this many milliseconds. Default 30 000. */
  timeoutMs?: number;
}

/** Options of {@link Lab.cni}. */
export interface CniCallOptions {
  containerId: string;
  /** The pod's namespace name; CNI_NETNS is then `/run/netns/<netns>`. Empty when absent. */
  netns?: string;
  /** CNI_IFNAME. Default `eth0`. */
  ifname?: string;
  /** The whole network config on stdin. Default: the node's, {@link Lab.cniConfig}. */
  conf?: Record<string, unknown>;
  /** CNI_ARGS (`K=V;K=V`). Default none. */
  args?: string;
  /** Kill the plugin after this many milliseconds. Default 30 000. */
  timeoutMs?: number;
}

/** Options of {@link Lab.startTcpServer}. */
export interface TcpServerOptions {
  /** What each connection is answered with (a newline is added). Default: the pod's name. */
  reply?: string;
  /**
   * Append the client's address as the server saw it (`<reply> <ip>:<port>`), to tell whether
   * traffic was masqueraded on the way. Default false.
   */
  includePeer?: boolean;
  /** The address to listen on. Default `0.0.0.0`. */
  host?: string;
  /** Name of the process and its log (`<logsDir>/<node>/<pod>/<name>.log`). Default `tcp-<port>`. */
  name?: string;
  /** How long to wait for it to listen. Default 10 000 ms. */
  timeoutMs?: number;
}

/** Options of {@link Lab.tcpRequest}. */
export interface TcpRequestOptions {
  /**
   * Give up (rejecting with `details.code` ETIMEDOUT) when no complete answer arrived within
   * this many milliseconds, connection included. Default 3 000.
   */
  timeoutMs?: number;
  /**
   * Sent once connected, before the client half-closes. Default `ping\n`. Text that starts
   * like an HTTP request gets an HTTP answer from {@link Lab.startTcpServer}'s responder.
   */
  send?: string;
}

/** Pod names: DNS-label-like and short, since they become part of a namespace name. */
export const POD_NAME_RE = /^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$/;

/** The registry prefix of the lab's objects: weft-proxy's default, which ProxyCluster uses. */
export const LAB_REGISTRY_PREFIX = '/weft';

/** The namespace of a lab pod's Pod object unless told otherwise. */
export const DEFAULT_POD_NAMESPACE = 'default';

/**
 * The v1 Pod the lab declares for a pod: labels, `spec.nodeName` and one container with the
 * ports, as `kubectl run` would write it (minus status: the attachment weft-cni records gives the
 * address). Not validated here, so a test can declare a hostile pod on purpose.
 */
export function podObject(
  pod: { namespace: string; name: string; node: string },
  labels: Readonly<Record<string, string>>,
  ports: readonly LabContainerPort[],
): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      namespace: pod.namespace,
      name: pod.name,
      ...(Object.keys(labels).length ? { labels: { ...labels } } : {}),
    },
    spec: {
      nodeName: pod.node,
      containers: [
        {
          name: 'main',
          image: 'weft-lab/responder',
          ...(ports.length
            ? {
                ports: ports.map((p) => ({
                  ...(p.name ? { name: p.name } : {}),
                  containerPort: p.containerPort,
                  protocol: p.protocol ?? 'TCP',
                })),
              }
            : {}),
        },
      ],
    },
  };
}

/** The CNI_ARGS a Kubernetes runtime passes for a pod. */
export function podCniArgs(namespace: string, name: string, containerId: string): string {
  return `IgnoreUnknown=1;K8S_POD_NAMESPACE=${namespace};K8S_POD_NAME=${name};K8S_POD_INFRA_CONTAINER_ID=${containerId}`;
}

/** The CNI network name of every lab node's config; host-local keys reservations by it. */
export const CNI_NETWORK = 'weft';

/** The CNI version the lab speaks to weft-cni. */
export const CNI_VERSION = '1.0.0';

function labError(message: string, details: Record<string, unknown> = {}): WeftError {
  return new WeftError(ErrorCodes.LAB, message, details);
}

/** What {@link parseAddResult} reads from an ADD result. */
export interface AddedAddress {
  ip: string;
  prefixLength: number;
  gateway: string;
  result: Record<string, unknown>;
}

/** The first IPv4 address (and gateway) of a CNI ADD result; throws WeftError LAB otherwise. */
export function parseAddResult(stdout: string): AddedAddress {
  let result: unknown;
  try {
    result = JSON.parse(stdout);
  } catch {
    throw labError(`weft-cni ADD printed no JSON: ${JSON.stringify(stdout.slice(0, 500))}`);
  }
  const ips = (result as { ips?: unknown }).ips;
  const v4 = Array.isArray(ips)
    ? (ips as { address?: unknown; gateway?: unknown }[]).find(
        (x) => typeof x.address === 'string' && /^\d+\.\d+\.\d+\.\d+\/\d+$/.test(x.address),
      )
    : undefined;
  if (!v4) throw labError(`weft-cni ADD result has no IPv4 address: ${stdout.trim()}`);
  const [ip, len] = (v4.address as string).split('/') as [string, string];
  return {
    ip,
    prefixLength: Number(len),
    gateway: typeof v4.gateway === 'string' ? v4.gateway : '',
    result: result as Record<string, unknown>,
  };
}

/** A CNI error reply (`{"code","msg","details"}`), or undefined when stdout is not one. */
export function parseCniError(stdout: string): { code: number; msg: string; details?: string } | undefined {
  try {
    const e = JSON.parse(stdout) as { code?: unknown; msg?: unknown; details?: unknown };
    if (typeof e.code !== 'number') return undefined;
    return {
      code: e.code,
      msg: typeof e.msg === 'string' ? e.msg : '',
      ...(typeof e.details === 'string' ? { details: e.details } : {}),
    };
  } catch {
    return undefined;
  }
}

/** What the TCP client prints: one JSON line. */
export interface TcpClientOutput {
  ok: boolean;
  data: string;
  code?: string;
  message?: string;
}

/** Reads the client's line; a missing or garbled line is reported as such, not thrown. */
export function parseTcpClientOutput(stdout: string, stderr: string): TcpClientOutput {
  try {
    return JSON.parse(stdout) as TcpClientOutput;
  } catch {
    return { ok: false, data: '', code: 'ECLIENT', message: (stderr || stdout).trim() || 'no output' };
  }
}

// The two programs below run as plain Node (no loader, no compile step) in any namespace, so
// they are plain JavaScript, written to the run dir. They use Node's core modules only.

/**
 * The responder: `node tcp-responder.mjs <port> <host> <reply> <includePeer 0|1>`. It prints
 * `listening <host>:<port>` once bound, then answers each connection with `<reply>\n` and
 * closes it: as soon as the client sent something (a whole header block for HTTP requests,
 * which get an HTTP/1.1 200), half-closed, or stayed silent for 200 ms.
 */
export const TCP_RESPONDER_JS = `import { createServer } from 'node:net';
const [port, host, reply, includePeer] = process.argv.slice(2);
const server = createServer({ allowHalfOpen: true }, (sock) => {
  let got = '';
  let answered = false;
  const peer = sock.remoteAddress + ':' + sock.remotePort;
  const answer = () => {
    if (answered) return;
    answered = true;
    clearTimeout(silence);
    const body = (includePeer === '1' ? reply + ' ' + peer : reply) + '\\n';
    const http = /^[A-Z]+ \\S+ HTTP\\/1\\.[01]\\r?\\n/.test(got);
    console.log('answered ' + peer + (http ? ' (http)' : ''));
    sock.end(
      http
        ? 'HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: ' +
            Buffer.byteLength(body) + '\\r\\nConnection: close\\r\\n\\r\\n' + body
        : body,
    );
  };
  const silence = setTimeout(answer, 200);
  sock.setEncoding('utf8');
  sock.on('data', (d) => {
    got += d;
    // An HTTP client must be read to the end of its headers, or closing resets its connection.
    if (!/^[A-Z]+ /.test(got) || /\\r?\\n\\r?\\n/.test(got)) answer();
  });
  sock.on('end', answer);
  sock.on('error', () => clearTimeout(silence));
});
server.on('error', (err) => {
  console.error('tcp-responder: ' + err.message);
  process.exit(1);
});
server.listen(Number(port), host, () => console.log('listening ' + host + ':' + port));
process.on('SIGTERM', () => process.exit(0));
`;

/**
 * The client: `node tcp-client.mjs <host> <port> <timeoutMs> <send>`. It sends `<send>`,
 * half-closes, reads until the server closes and prints one JSON line, {@link TcpClientOutput};
 * it exits 0 either way, so a refused or silent target is a result, not a crash.
 */
export const TCP_CLIENT_JS = `import { connect } from 'node:net';
const [host, port, timeoutMs, send] = process.argv.slice(2);
let data = '';
let done = false;
const sock = connect({ host, port: Number(port) });
const finish = (out) => {
  if (done) return;
  done = true;
  clearTimeout(timer);
  process.stdout.write(JSON.stringify({ ...out, data }) + '\\n');
  sock.destroy();
};
const timer = setTimeout(
  () => finish({ ok: false, code: 'ETIMEDOUT', message: 'no complete answer within ' + timeoutMs + ' ms' }),
  Number(timeoutMs),
);
sock.setEncoding('utf8');
sock.on('connect', () => sock.end(send));
sock.on('data', (d) => (data += d));
sock.on('end', () => finish({ ok: true }));
sock.on('error', (err) => finish({ ok: false, code: err.code ?? 'ERROR', message: err.message }));
`;
