/**
 * A throwaway certificate authority for TLS tests, made with the openssl CLI: a CA
 * (key + self-signed certificate) and server certificates it signs, for 127.0.0.1 and
 * localhost by default (subjectAltName IP:127.0.0.1, DNS:localhost), each with its own
 * random serial. Everything is written under the directory given; nothing is trusted
 * outside the test.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

async function openssl(args: string[]): Promise<void> {
  try {
    await run('openssl', args);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`openssl ${args[0]} failed: ${e.stderr ?? e.message}`);
  }
}

export interface TestCa {
  name: string;
  certFile: string;
  keyFile: string;
  /** PEM of the CA certificate. */
  pem: string;
}

export interface ServerCert {
  certFile: string;
  keyFile: string;
  cert: string;
  key: string;
  /** As node:crypto's X509Certificate reports it (upper-case hex). */
  serial: string;
  fingerprint256: string;
}

/** A new CA in `dir` (files `<name>.crt`, `<name>.key`), valid for two days. */
export async function makeCa(dir: string, name: string): Promise<TestCa> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  await openssl([
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', `/CN=kiln test CA ${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return { name, certFile, keyFile, pem: await readFile(certFile, 'utf8') };
}

/**
 * A server certificate signed by `ca`, written as `<name>.crt` / `<name>.key` in `dir`.
 * `altNames` is the subjectAltName list (default IP:127.0.0.1,DNS:localhost).
 */
export async function issueServerCert(ca: TestCa, dir: string, name: string, altNames = 'IP:127.0.0.1,DNS:localhost'): Promise<ServerCert> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  await writeFile(ext, `subjectAltName=${altNames}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n`);
  await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', csr, '-subj', `/CN=${name}`]);
  const serial = `0x${[...crypto.getRandomValues(new Uint8Array(8))].map((b) => b.toString(16).padStart(2, '0')).join('').replace(/^0/, '1')}`;
  await openssl(['x509', '-req', '-in', csr, '-CA', ca.certFile, '-CAkey', ca.keyFile, '-set_serial', serial, '-days', '2', '-extfile', ext, '-out', certFile]);
  const cert = await readFile(certFile, 'utf8');
  const x509 = new X509Certificate(cert);
  return { certFile, keyFile, cert, key: await readFile(keyFile, 'utf8'), serial: x509.serialNumber, fingerprint256: x509.fingerprint256 };
}
