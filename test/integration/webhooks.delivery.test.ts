/**
 * Webhooks (issue 13) with real processes: a coordinator configured with three hooks and
 * an allow-list, a noop agent, and a real HTTP receiver in this test on port 0. The
 * receiver gets a build's build and node events in order, each body signed with the
 * hook's secret (a 0600 file for a coordinator hook, a build secret for the build's own
 * hook); a receiver answering 500 twice then 200 gets the delivery on the third attempt
 * (same delivery id; the delivery log shows the three attempts); a 400 is not retried; a
 * per-build hook to a host not allowed is refused at submit with a 400 naming the field.
 * The hooks are listed without secrets, coordinator hooks to admin keys only; `kiln
 * webhooks` and the metrics show the counts.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiPath, type DeliveryListT, type WebhookListT } from '../../shared/index.js';
import { verifySignature } from '../../coordinator/webhooks/signature.js';
import { inline, kiln, startAgent, startCoordinator, submitSpec, tempDir, waitFor, waitForBuild, type CoordinatorHandle, type Proc } from '../helpers/cluster.js';

const NATIVE = `linux/${process.arch === 'x64' ? 'amd64' : process.arch}`;
const HOOK_SECRET = 'coordinator-hook-secret-7f3a';
const BUILD_SECRET = 'build-hook-secret-91bd';

interface Received {
  path: string;
  headers: IncomingMessage['headers'];
  raw: string;
  /** When the receiver had the whole body (ms). */
  receivedAt: number;
  body: { id: string; type: 'build' | 'node'; at: string; data: Record<string, unknown> & { id?: string; state?: string; build?: string; node?: { name: string; state: string } } };
}

describe('webhooks', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let receiver: Server;
  let base = '';
  let receiverPort = 0;
  let coord: CoordinatorHandle;
  let agent: Proc;
  const received: Received[] = [];
  /** Answers per delivery id on /flaky: 500, 500, then 200. */
  const flakyTries = new Map<string, number>();

  beforeAll(async () => {
    dir = await tempDir('webhooks');
    receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const path = req.url ?? '';
        received.push({ path, headers: req.headers, raw, receivedAt: Date.now(), body: JSON.parse(raw) as Received['body'] });
        if (path === '/flaky') {
          const id = String(req.headers['x-kiln-delivery']);
          const n = (flakyTries.get(id) ?? 0) + 1;
          flakyTries.set(id, n);
          res.writeHead(n <= 2 ? 500 : 200, { 'content-type': 'text/plain' }).end(n <= 2 ? `try ${n}: down` : 'ok after retries');
        } else if (path === '/bad') {
          res.writeHead(400, { 'content-type': 'text/plain' }).end('bad request: never retry me');
        } else if (path === '/own') {
          res.writeHead(200, { 'content-type': 'text/plain' }).end('internal answer of the receiver');
        } else {
          res.writeHead(204).end();
        }
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    receiverPort = (receiver.address() as AddressInfo).port;
    base = `http://127.0.0.1:${receiverPort}`;
    const secretFile = join(dir.path, 'hook.secret');
    await writeFile(secretFile, `${HOOK_SECRET}\n`, { mode: 0o600 });
    coord = await startCoordinator({
      dataDir: join(dir.path, 'data'),
      config: {
        webhooks: {
          hooks: [
            { name: 'all', url: `${base}/all?token=in-the-query`, events: ['build', 'node'], secret_file: secretFile },
            { name: 'flaky', url: `${base}/flaky`, events: ['build'], build_states: ['success'] },
            { name: 'bad', url: `${base}/bad`, events: ['build'], build_states: ['success'] },
          ],
          // the receiver's port only: a bare host would allow ports 80 and 443 alone
          allowed_hosts: [`127.0.0.1:${receiverPort}`],
          backoff: '20ms',
          timeout: '5s',
        },
      },
    });
    agent = await startAgent({ coordinator: coord, name: 'wh-noop', workDir: join(dir.path, 'agent'), executor: 'noop', maxJobs: 2 });
  });

  afterAll(async () => {
    await agent?.stop();
    await coord?.proc.stop();
    await new Promise((r) => receiver?.close(r));
    await dir?.cleanup();
  });

  const deliveries = (id: string) => coord.api<DeliveryListT>(apiPath.webhookDeliveries(id));

  it('sends build and node events in order, signed, retries 5xx, never a 400, and logs the attempts', async () => {
    const put = await coord.api(apiPath.secret('hook_key'), { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: BUILD_SECRET });
    expect(put.status).toBe(201);
    const id = await submitSpec(coord, {
      name: 'hooked',
      nodes: { a: inline('FROM kiln/busybox:1\nRUN echo a', { platform: NATIVE }), b: inline('FROM kiln/busybox:1\nRUN echo b', { platform: NATIVE, needs: ['a'] }) },
      notify: { webhooks: [{ url: `${base}/own`, events: ['build', 'node'], node_states: ['running', 'success'], secret: 'hook_key' }] },
    });
    await waitForBuild(coord, id, (b) => b.state === 'success');
    const of = (path: string) => received.filter((r) => r.path === path && (r.body.data.id === id || r.body.data.build === id));
    const done = (path: string) => of(path).some((r) => r.body.type === 'build' && r.body.data.state === 'success');
    await waitFor('every hook to hear of the success', () => done('/all?token=in-the-query') && done('/own') && done('/bad'));
    // /flaky answers 500 twice: wait for its third attempt's 200 in the delivery log.
    await waitFor('the flaky hook to be delivered', async () => (await deliveries('flaky')).body.items[0]?.outcome === 'delivered');

    // The coordinator hook: every state change of the build and its nodes, in order, signed.
    const all = of('/all?token=in-the-query');
    for (const r of all) {
      expect(r.headers['content-type']).toBe('application/json');
      expect(r.headers['user-agent']).toMatch(/^kiln\/\d/);
      expect(r.headers['x-kiln-event']).toBe(r.body.type);
      expect(r.headers['x-kiln-delivery']).toBe(r.body.id);
      expect(verifySignature(r.raw, HOOK_SECRET, r.headers['x-kiln-signature-256'] as string)).toBe(true);
      expect(verifySignature(r.raw, 'wrong', r.headers['x-kiln-signature-256'] as string)).toBe(false);
      expect(new Date(r.body.at).toISOString()).toBe(r.body.at);
    }
    expect(new Set(all.map((r) => r.body.id)).size).toBe(all.length); // one delivery id per event
    const builds = all.filter((r) => r.body.type === 'build');
    expect(builds.map((r) => r.body.data.state)).toEqual(['pending', 'running', 'success']);
    expect(builds[0]!.body.data).toMatchObject({ id, name: 'hooked', node_counts: expect.any(Object), pinned: false, submitted_by: expect.any(String) });
    expect(all[0]!.body.type).toBe('build'); // a build's first event is its own
    expect(all.at(-1)!.body).toMatchObject({ type: 'build', data: { state: 'success' } });
    const ORDER = ['pending', 'ready', 'assigned', 'running', 'success'];
    for (const name of ['a', 'b']) {
      const states = all.filter((r) => r.body.type === 'node' && r.body.data.node?.name === name).map((r) => r.body.data.node!.state);
      expect(states.at(-1), name).toBe('success');
      expect(states.includes('running'), name).toBe(true);
      expect(
        states.every((s, i) => i === 0 || ORDER.indexOf(s) > ORDER.indexOf(states[i - 1]!)),
        `${name}: ${states.join(' -> ')}`,
      ).toBe(true);
    }
    // b runs only after a succeeded: its node events come after a's success.
    const at = (name: string, state: string) => all.findIndex((r) => r.body.type === 'node' && r.body.data.node?.name === name && r.body.data.node.state === state);
    expect(at('b', 'running')).toBeGreaterThan(at('a', 'success'));
    const nodeData = all.find((r) => r.body.type === 'node' && r.body.data.node?.state === 'success')!.body.data;
    expect(nodeData).toMatchObject({ build: id, node: { platform: NATIVE, agent: 'wh-noop', attempt: 1, reused: false, error: null, waiting: null, duration_ms: expect.any(Number) } });
    expect(Object.keys(nodeData.node!).sort()).toEqual(['agent', 'attempt', 'cache', 'duration_ms', 'error', 'exit_code', 'finished_at', 'name', 'platform', 'reused', 'started_at', 'state', 'waiting']);

    // A figure, not a limit: from the state change (the body's `at`) to the receiver having the body.
    const lag = all.map((r) => r.receivedAt - Date.parse(r.body.at)).sort((x, y) => x - y);
    console.log(`webhook latency, state change -> receiver (${lag.length} events): p50 ${lag[Math.floor(lag.length / 2)]} ms, max ${lag.at(-1)} ms`);

    // The build's own hook: its filter (node running/success), signed with the build secret.
    const own = of('/own');
    const label = (r: Received) => (r.body.type === 'build' ? `build:${r.body.data.state}` : `${r.body.data.node!.name}:${r.body.data.node!.state}`);
    expect(own.filter((r) => r.body.type === 'node').map(label)).toEqual(['a:running', 'a:success', 'b:running', 'b:success']);
    expect(own.filter((r) => r.body.type === 'build').map(label)).toEqual(['build:pending', 'build:running', 'build:success']);
    expect(label(own[0]!)).toBe('build:pending');
    expect(label(own.at(-1)!)).toBe('build:success');
    for (const r of own) expect(verifySignature(r.raw, BUILD_SECRET, r.headers['x-kiln-signature-256'] as string)).toBe(true);

    // 500, 500, 200: delivered on the third attempt, one delivery id; the log shows all three.
    const flaky = of('/flaky');
    expect(flaky).toHaveLength(3);
    expect(new Set(flaky.map((r) => r.body.id)).size).toBe(1);
    expect(flaky.map((r) => r.headers['x-kiln-attempt'])).toEqual(['1', '2', '3']);
    expect(flaky[0]!.headers['x-kiln-signature-256']).toBeUndefined(); // no secret: unsigned
    const flakyLog = await deliveries('flaky');
    expect(flakyLog.status).toBe(200);
    expect(flakyLog.body.items.map((d) => [d.attempt, d.status, d.outcome, d.response])).toEqual([
      [3, 200, 'delivered', 'ok after retries'],
      [2, 500, 'retrying', 'try 2: down'],
      [1, 500, 'retrying', 'try 1: down'],
    ]);
    expect(flakyLog.body.items[0]).toMatchObject({ event: 'build', build: id, node: null, state: 'success', delivery: flaky[0]!.body.id });
    expect(flakyLog.body.hook).toMatchObject({ id: 'flaky', scope: 'coordinator', delivered: 1, failed: 0, retried: 2 });

    // 400: failed at the first attempt, nothing planned after it.
    const badLog = await waitFor('the 400 in the log', async () => {
      const r = await deliveries('bad');
      return r.body.items.length > 0 ? r.body : null;
    });
    expect(badLog.items.map((d) => [d.attempt, d.status, d.outcome, d.response])).toEqual([[1, 400, 'failed', 'bad request: never retry me']]);
    expect(badLog.hook).toMatchObject({ failed: 1, delivered: 0, retried: 0, queued: 0, in_flight: 0 });
    expect(of('/bad')).toHaveLength(1);

    // The list: no secret, the URL as its origin only, the build's own hook as <build>:1.
    const list = await coord.api<WebhookListT>(apiPath.webhooks());
    expect(list.status).toBe(200);
    const text = JSON.stringify(list.body);
    for (const secret of [HOOK_SECRET, BUILD_SECRET, 'in-the-query', 'hook.secret']) expect(text).not.toContain(secret);
    expect(list.body.items.map((h) => h.id)).toEqual(['all', 'flaky', 'bad', `${id}:1`]);
    expect(list.body.items[0]).toMatchObject({ target: base, events: ['build', 'node'], signed: true, scope: 'coordinator' });
    expect(list.body.items[3]).toMatchObject({ scope: 'build', build: id, name: null, target: base, signed: true, node_states: ['running', 'success'], failed: 0 });
    expect(list.body.items[3]!.delivered).toBe(own.length);

    // The CLI shows the same.
    const cli = await kiln(['webhooks'], coord.cliEnv);
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toMatch(/^flaky\s+http:\/\/127\.0\.0\.1:\d+\s+build\s+0\s+1\s+0\s+0\s+delivered \(200, attempt 3\)$/m);
    const cliLog = await kiln(['webhooks', 'deliveries', 'flaky', '--json'], coord.cliEnv);
    expect(cliLog.code, cliLog.stderr).toBe(0);
    expect(cliLog.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { attempt: number }).attempt)).toEqual([3, 2, 1]);

    // Metrics: deliveries by outcome, per coordinator hook.
    const metrics = await (await fetch(`${coord.url}/metrics`)).text();
    expect(metrics).toContain('kiln_webhook_deliveries_total{hook="flaky",outcome="retried"} 2');
    expect(metrics).toContain('kiln_webhook_deliveries_total{hook="bad",outcome="failed"} 1');
    expect(metrics).toMatch(new RegExp(`kiln_webhook_deliveries_total\\{hook="build",outcome="delivered"\\} ${own.length}\\b`));
  });

  it('refuses a per-build hook to a host not allowed at submit, naming the field', async () => {
    const r = await coord.api<{ detail: string; errors: Array<{ path: string; message: string }> }>(apiPath.builds(), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ nodes: { a: inline('FROM kiln/busybox:1', { platform: NATIVE }) }, notify: { webhooks: [{ url: 'http://169.254.169.254/latest/meta-data' }] } }),
    });
    expect(r.status).toBe(400);
    expect(r.body.errors).toEqual([{ path: 'notify.webhooks.0.url', message: `field 'notify.webhooks.0.url': host '169.254.169.254' is not in the coordinator's webhooks.allowed_hosts (127.0.0.1:${receiverPort}; an entry without :port allows ports 80 and 443 only)` }]);
    expect(r.body.detail).toContain('notify.webhooks.0.url');
    // The allowed host on another port (another service on it) is refused too.
    const other = await coord.api<{ errors: Array<{ path: string; message: string }> }>(apiPath.builds(), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ nodes: { a: inline('FROM kiln/busybox:1', { platform: NATIVE }) }, notify: { webhooks: [{ url: 'http://127.0.0.1:2375/containers/prune' }] } }),
    });
    expect(other.status).toBe(400);
    expect(other.body.errors[0]!.message).toContain("host '127.0.0.1' on port 2375 is not in the coordinator's webhooks.allowed_hosts");
  });

  it("shows the coordinator's hooks to admin keys only", async () => {
    const created = await coord.api<{ secret: string }>(apiPath.keys(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ scopes: ['read'], name: 'reader' }) });
    expect(created.status).toBe(201);
    const asReader = (path: string) => fetch(`${coord.url}${path}`, { headers: { authorization: `Bearer ${created.body.secret}` } });
    const list = (await (await asReader(apiPath.webhooks())).json()) as WebhookListT;
    expect(list.items.length).toBeGreaterThan(0);
    expect(list.items.every((h) => h.scope === 'build')).toBe(true);
    const own = await asReader(apiPath.webhookDeliveries(list.items[0]!.id));
    expect(own.status).toBe(200);
    // What the receiver answered a build's own hook: to admin keys only (the hook's target is the submitter's choice).
    const ownBody = (await own.json()) as { items: Array<{ response: string }> };
    expect(ownBody.items.length).toBeGreaterThan(0);
    expect(ownBody.items.every((d) => d.response === '')).toBe(true);
    expect(JSON.stringify(list)).not.toContain('internal answer');
    const asAdmin = await coord.api<{ items: Array<{ response: string }> }>(apiPath.webhookDeliveries(list.items[0]!.id));
    expect(asAdmin.body.items[0]!.response).toBe('internal answer of the receiver');
    const forbidden = await asReader(apiPath.webhookDeliveries('all'));
    expect(forbidden.status).toBe(403);
    expect(((await forbidden.json()) as { code: string }).code).toBe('E_SCOPE');
    expect((await asReader(apiPath.webhookDeliveries('nosuch'))).status).toBe(404);
  });
});
