/**
 * Realistic data for HTTP API tests against a real coordinator: a context tar uploaded to
 * the CAS, and builds in the states the routes care about (pending, cancelled, pinned,
 * succeeded with artifacts and a log, failed with an error report), so generated requests
 * can name real build ids, node names, agent names and digests and reach the handlers
 * instead of stopping at a 404; and the shape of a build snapshot (what must not change
 * about a build when other requests are made).
 */
import { pack } from 'tar-stream';
import { apiPath, sha256 } from '../../shared/index.js';
import { submitSpec, waitForBuild, type CoordinatorHandle } from './cluster.js';

/** Labels no agent has: a node asking for them stays ready (waiting) for ever. */
export const NOWHERE = { pool: 'nowhere' } as const;
/** Labels only the fake agent has (test/helpers/fake-agent.ts). */
export const FAKE = { fake: 'yes' } as const;

export async function tarOf(files: Record<string, string>): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  p.on('data', (c: unknown) => {
    chunks.push(c as Buffer);
  });
  const done = new Promise<void>((r) => p.on('end', () => r()));
  for (const [name, body] of Object.entries(files)) p.entry({ name, mtime: new Date(0) }, body);
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

export async function putBlob(c: CoordinatorHandle, bytes: Buffer, contentType = 'application/x-tar'): Promise<string> {
  const digest = sha256(bytes);
  const r = await c.api(apiPath.casBlob(digest), { method: 'PUT', body: bytes, headers: { 'content-type': contentType } });
  if (r.status !== 200 && r.status !== 201) throw new Error(`PUT ${digest}: ${r.status} ${JSON.stringify(r.body)}`);
  return digest;
}

export interface SeededBuilds {
  /** A build whose nodes wait for an agent that never comes (labels NOWHERE). */
  pending: string;
  /** A pending build whose node has an uploaded context. */
  withContext: string;
  cancelled: string;
  /** Pending and pinned. */
  pinned: string;
  /** Succeeded on the fake agent: a log and an artifact (only when `agent` was asked for). */
  success?: string;
  /** Failed on the fake agent: an error report, a retryable node. */
  failed?: string;
  /** Node names of these builds. */
  nodes: string[];
  /** Digests stored in the CAS (the context tar, a plain blob). */
  digests: string[];
}

/**
 * Submits the builds; with `agent: true` a fake agent (labels FAKE) must be connected,
 * and the success and failed builds are awaited.
 */
export async function seedBuilds(c: CoordinatorHandle, opts: { agent: boolean }): Promise<SeededBuilds> {
  const ctx = await tarOf({ Dockerfile: 'FROM kiln/busybox:1\nCOPY main.c /src/\n', 'main.c': 'int main(){return 0;}\n' });
  const ctxDigest = await putBlob(c, ctx);
  const blobDigest = await putBlob(c, Buffer.from('a plain blob for the API tests\n'), 'application/octet-stream');
  const inline = 'FROM kiln/busybox:1\nRUN echo hello\n';
  const pending = await submitSpec(c, {
    name: 'seed pending',
    nodes: {
      compile: { dockerfile_inline: inline, labels: { ...NOWHERE }, build_args: { VERSION: '1.2.3' }, outputs: { bin: '/out/bin' } },
      'unit-tests': { dockerfile_inline: inline, labels: ['pool=nowhere', 'tier!=spot'], needs: ['compile'], test: { command: 'true', env: { CI: '1' } } },
    },
  });
  const withContext = await submitSpec(c, { name: 'seed context', nodes: { app: { context: ctxDigest, dockerfile: 'Dockerfile', labels: { ...NOWHERE } } } });
  const cancelled = await submitSpec(c, { name: 'seed cancelled', nodes: { doomed: { dockerfile_inline: inline, labels: { ...NOWHERE } } } });
  const cr = await c.api(apiPath.buildCancel(cancelled), { method: 'POST' });
  if (cr.status !== 202) throw new Error(`cancel ${cancelled}: ${cr.status} ${JSON.stringify(cr.body)}`);
  const pinned = await submitSpec(c, { name: 'seed pinned', nodes: { keep: { dockerfile_inline: inline, labels: { ...NOWHERE } } } });
  const pr = await c.api(apiPath.buildPin(pinned), { method: 'POST' });
  if (pr.status !== 200) throw new Error(`pin ${pinned}: ${pr.status} ${JSON.stringify(pr.body)}`);
  const out: SeededBuilds = { pending, withContext, cancelled, pinned, nodes: ['compile', 'unit-tests', 'app', 'doomed', 'keep'], digests: [ctxDigest, blobDigest] };
  if (opts.agent) {
    out.success = await submitSpec(c, {
      name: 'seed success',
      nodes: { package: { dockerfile_inline: `${inline}RUN mkdir -p /dist\n`, labels: { ...FAKE }, outputs: { dist: '/dist' } } },
    });
    out.failed = await submitSpec(c, {
      name: 'seed failed',
      nodes: {
        'fail-build': { dockerfile_inline: `${inline}RUN exit 1\n`, labels: { ...FAKE }, retry: false },
        after: { dockerfile_inline: inline, labels: { ...FAKE }, needs: ['fail-build'] },
      },
    });
    await waitForBuild(c, out.success, undefined, 60_000);
    await waitForBuild(c, out.failed, undefined, 60_000);
    out.nodes.push('package', 'fail-build', 'after');
  }
  return out;
}

/** What must not change about a build when other requests are made. */
export interface BuildSnapshot {
  id: string;
  status: number;
  state?: string;
  pinned?: boolean;
  cancel_requested?: boolean;
  nodes?: Array<{ name: string; state: string; labels: Record<string, string>; needs: string[]; attempts: number }>;
}
