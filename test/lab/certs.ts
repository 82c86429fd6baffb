/**
 * Throwaway TLS material for tests, made with the `openssl` CLI: a CA, a server certificate
 * for 127.0.0.1 and a client certificate, each with its key, as PEM files in a directory of
 * the caller's run (removed with it).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from './exec.js';

/** A certificate and its key, as files. */
export interface CertFiles {
  certFile: string;
  keyFile: string;
}

/** What {@link generateTestCerts} writes. */
export interface TestCerts {
  /** The CA that signed both certificates. */
  ca: CertFiles;
  /** For the server: SAN IP:127.0.0.1 (and DNS:localhost), serverAuth and clientAuth usage. */
  server: CertFiles;
  /** For a client: clientAuth usage, CN `weft-client`. */
  client: CertFiles;
}

const OPENSSL = 'openssl';
// P-256 keys: quick to make, and understood by both Go (etcd) and Node's TLS (grpc-js).
const KEY_ARGS = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A self-signed CA, `<dir>/<name>.crt` and `<dir>/<name>.key`. */
export async function makeTestCa(dir: string, name = 'ca'): Promise<CertFiles> {
  mkdirSync(dir, { recursive: true });
  const files = { certFile: join(dir, `${name}.crt`), keyFile: join(dir, `${name}.key`) };
  await run(OPENSSL, [
    'req',
    '-x509',
    ...KEY_ARGS,
    '-keyout',
    files.keyFile,
    '-out',
    files.certFile,
    '-days',
    '2',
    '-subj',
    `/CN=weft test ${name}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return files;
}

/** Options of {@link issueTestCert}. */
export interface IssueOptions {
  commonName: string;
  /** subjectAltName entries, e.g. `IP:127.0.0.1`. */
  subjectAltNames?: string[];
  /** extendedKeyUsage values. Default `serverAuth,clientAuth`. */
  extendedKeyUsage?: string[];
}

/** A certificate signed by `ca`, `<dir>/<name>.crt` and `<dir>/<name>.key`. */
export async function issueTestCert(
  ca: CertFiles,
  dir: string,
  name: string,
  opts: IssueOptions,
): Promise<CertFiles> {
  mkdirSync(dir, { recursive: true });
  const files = { certFile: join(dir, `${name}.crt`), keyFile: join(dir, `${name}.key`) };
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  const lines = [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    `extendedKeyUsage=${(opts.extendedKeyUsage ?? ['serverAuth', 'clientAuth']).join(',')}`,
  ];
  if (opts.subjectAltNames?.length) lines.push(`subjectAltName=${opts.subjectAltNames.join(',')}`);
  writeFileSync(ext, `${lines.join('\n')}\n`);
  await run(OPENSSL, [
    'req',
    '-new',
    ...KEY_ARGS,
    '-keyout',
    files.keyFile,
    '-out',
    csr,
    '-subj',
    `/CN=${opts.commonName}`,
  ]);
  await run(OPENSSL, [
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    ca.certFile,
    '-CAkey',
    ca.keyFile,
    '-set_serial',
    `0x${Date.now().toString(16)}${Math.floor(Math.random() * 0xffff).toString(16)}`,
    '-days',
    '2',
    '-extfile',
    ext,
    '-out',
    files.certFile,
  ]);
  return files;
}

/** A CA with a server certificate for 127.0.0.1 and a client certificate, in `dir`. */
export async function generateTestCerts(dir: string): Promise<TestCerts> {
  const ca = await makeTestCa(dir, 'ca');
  const [server, client] = await Promise.all([
    // etcd 3.4's gRPC gateway dials its own server with the server certificate, so that one
    // needs clientAuth as well.
    issueTestCert(ca, dir, 'server', {
      commonName: '127.0.0.1',
      subjectAltNames: ['IP:127.0.0.1', 'DNS:localhost'],
      extendedKeyUsage: ['serverAuth', 'clientAuth'],
    }),
    issueTestCert(ca, dir, 'client', { commonName: 'weft-client', extendedKeyUsage: ['clientAuth'] }),
  ]);
  return { ca, server, client };
}
