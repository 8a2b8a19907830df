/**
 * The dashboard in a real headless Chromium (Debian's, driven by playwright-core) against
 * a real coordinator process with real agents: two no-op agents (where a build's content
 * does not matter) and a Docker agent (a real BuildKit build for the log view). Every page
 * is opened through a TCP proxy so the test can drop the browser's connections.
 *
 * - sign in with a key (the form); a build submitted with the CLI appears in the list
 *   without a reload;
 * - its DAG shows every node, and node states change on the page as the build runs;
 * - a node's log shows lines as the build writes them (the figure: line written → row in
 *   the page), keeps every line exactly once across a dropped connection, and shows the
 *   build's ANSI colours;
 * - cancel and retry work for an admin and are not offered to a read-only key;
 * - the agents page shows a paused agent as paused, and no control buttons without admin;
 * - screenshots of every page in light and dark go to test-results/screenshots/.
 */
import { access } from 'node:fs/promises';
import { uptime } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiPath } from '../../shared/index.js';
import { collectPageErrors, launchBrowser, newContext, screenshot } from '../helpers/browser.js';
import { REPO, getBuild, inline, kiln, requireBuilt, submitSpec, useCluster, waitFor, waitForBuild } from '../helpers/cluster.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

const NOOP = { kind: 'noop' };
const DOCKER = { kind: 'docker' };

describe('the dashboard in headless Chromium', () => {
  const cluster = useCluster('dashboard', {
    agents: [
      { name: 'noop-1', executor: 'noop', labels: 'kind=noop', maxJobs: 4, env: { KILN_NOOP_DELAY_MS: '700-1500' } },
      { name: 'noop-2', executor: 'noop', labels: 'kind=noop', maxJobs: 2, env: { KILN_NOOP_DELAY_MS: '700-1500' } },
      { name: 'docker-1', labels: 'kind=docker', maxJobs: 2 },
    ],
  });
  let browser: Browser;
  let proxy: TcpProxy;
  let readKey: string;
  const contexts: BrowserContext[] = [];

  beforeAll(async () => {
    requireBuilt();
    await access(join(REPO, 'dist', 'web', 'index.html')); // npm run build made the dashboard
    browser = await launchBrowser();
    proxy = await startTcpProxy({ port: cluster.coord.port });
    const r = await cluster.coord.api<{ secret: string }>(apiPath.keys(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ scopes: ['read'], name: 'wallboard' }) });
    expect(r.status).toBe(201);
    readKey = r.body.secret;
  });
  afterAll(async () => {
    for (const c of contexts) await c.close().catch(() => {});
    await browser?.close();
    await proxy?.close();
  });

  /** A new browser context (own cookies) signed in with `key` through the form, on the builds page. */
  async function signedIn(key: string, colorScheme: 'light' | 'dark' = 'light'): Promise<{ page: Page; errors: string[] }> {
    const ctx = await newContext(browser, { baseURL: proxy.url, colorScheme });
    contexts.push(ctx);
    const page = await ctx.newPage();
    const errors = collectPageErrors(page);
    await page.goto('/');
    await page.locator('#key').fill(key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('nav[aria-label="Main"]').waitFor();
    return { page, errors };
  }

  /** The state word the DAG shows for `node` (its aria-label `name: state`). */
  async function nodeState(page: Page, node: string): Promise<string | null> {
    const label = await page.locator(`.dag-node[data-node="${node}"]`).getAttribute('aria-label', { timeout: 1000 }).catch(() => null);
    return label?.split(': ')[1] ?? null;
  }

  let admin: Page;
  let adminErrors: string[];

  it('signs in with a key, and a build submitted with the CLI appears in the list without a reload', async () => {
    ({ page: admin, errors: adminErrors } = await signedIn(cluster.coord.apiToken));
    await admin.locator('table.builds, .list-head').first().waitFor();
    // The key is not kept anywhere the page can read: the cookie is HttpOnly.
    expect(await admin.evaluate('document.cookie')).toBe('');
    const spec = join(cluster.dir, 'list.json');
    const { writeFile } = await import('node:fs/promises');
    await writeFile(spec, JSON.stringify({ name: 'from-the-cli', nodes: { one: inline('FROM kiln/busybox:1\n', { labels: NOOP }) } }));
    const sub = await kiln(['submit', spec, '--json'], cluster.coord.cliEnv);
    expect(sub.code).toBe(0);
    const id = (JSON.parse(sub.stdout) as { id: string }).id;
    const row = admin.locator(`tr[data-build="${id}"]`);
    await row.waitFor({ timeout: 30_000 });
    await expect.poll(async () => (await row.textContent()) ?? '', { timeout: 30_000 }).toContain('success');
    expect(await row.textContent()).toContain('from-the-cli');
    await screenshot(admin, 'builds-light');
  });

  it('shows every node of a DAG and their states changing as the build runs', async () => {
    const nodes: Record<string, unknown> = {};
    const names = ['fetch', 'compile-a', 'compile-b', 'compile-c', 'test', 'package'];
    nodes.fetch = inline('FROM kiln/busybox:1\n', { labels: NOOP });
    for (const n of ['compile-a', 'compile-b', 'compile-c']) nodes[n] = inline('FROM kiln/busybox:1\n', { labels: NOOP, needs: ['fetch'] });
    nodes.test = inline('FROM kiln/busybox:1\n', { labels: NOOP, needs: ['compile-a', 'compile-b', 'compile-c'] });
    nodes.package = inline('FROM kiln/busybox:1\n', { labels: NOOP, needs: ['test'] });
    const id = await submitSpec(cluster.coord, { name: 'dag-live', nodes });
    await admin.goto(`/builds/${id}`);
    for (const n of names) await admin.locator(`.dag-node[data-node="${n}"]`).waitFor({ timeout: 30_000 });
    // Record every state each node shows while the build runs (polled from the page).
    const seen = new Map<string, Set<string>>(names.map((n) => [n, new Set<string>()]));
    await waitFor(
      'every node to show success on the page',
      async () => {
        for (const n of names) {
          const s = await nodeState(admin, n);
          if (s) seen.get(n)!.add(s);
        }
        return names.every((n) => seen.get(n)!.has('success'));
      },
      60_000,
      50,
    );
    // The page changed without a reload: the last node was seen waiting or running before success.
    expect([...seen.get('package')!].some((s) => s !== 'success')).toBe(true);
    expect([...seen.get('test')!].some((s) => s !== 'success')).toBe(true);
    await expect.poll(async () => admin.getByTestId('build-state').textContent(), { timeout: 30_000 }).toContain('success');
    // Edges by needs: React Flow draws one per dependency.
    expect(await admin.locator('.react-flow__edge').count()).toBe(3 + 3 + 1);
    await screenshot(admin, 'build-light');
  });

  it("streams a real BuildKit build's log as it is written, across a dropped connection, with its colours", async () => {
    const lines = 40;
    // /proc/uptime (10 ms resolution) is the host's: the test turns it into a wall-clock time.
    const run = `for i in $(seq 1 ${lines}); do printf '\\033[32mgreen line %d\\033[0m up=%s\\n' $i $(cut -d' ' -f1 /proc/uptime); sleep 0.1; done`;
    const id = await submitSpec(cluster.coord, { name: 'log-live', nodes: { logs: inline(`FROM kiln/busybox:1\nRUN ${run}\n`, { labels: DOCKER, no_cache: true }) } });
    await admin.goto(`/builds/${id}`);
    await admin.locator('.dag-node[data-node="logs"]').click();
    const pane = admin.locator('.log-pane');
    await pane.waitFor();
    // Each row the page adds: when it appeared, and its build-side time.
    const bootMs = Date.now() - uptime() * 1000;
    // (Page scripts are strings: the tests are type-checked without the DOM library.)
    await admin.evaluate(`
      window.__rows = [];
      new MutationObserver((muts) => {
        for (const m of muts)
          for (const n of m.addedNodes)
            if (n instanceof HTMLElement && n.dataset.line) window.__rows.push([n.textContent ?? '', Date.now()]);
      }).observe(document.body, { childList: true, subtree: true });
    `);
    // Drop the browser's connections once a few lines are in: the log stream must resume.
    await waitFor('the first green lines in the page', async () => (await admin.locator('.log-pane [data-line]', { hasText: 'green line 5 ' }).count()) > 0, 60_000, 20);
    proxy.cut();
    await waitForBuild(cluster.coord, id);
    await expect.poll(async () => pane.getAttribute('data-state'), { timeout: 30_000 }).toBe('ended');
    // The pane's attempts follow the node too (its full view is fetched again as it changes).
    await expect.poll(async () => admin.locator('aside.pane table.compact tbody tr').first().textContent(), { timeout: 30_000 }).toContain('success');
    // Every stored line exactly once: the page's line count is the stored log's.
    const raw = await cluster.coord.api<string>(apiPath.nodeLogs(id, 'logs'));
    const stored = String(raw.body).split('\n');
    if (stored.at(-1) === '') stored.pop();
    expect(Number(await pane.getAttribute('data-lines'))).toBe(stored.length);
    // Colours: the green lines are drawn with the ANSI green class.
    const green = admin.locator('.log-pane [data-line]', { hasText: `green line ${lines} ` }).first();
    await admin.locator('.log-pane .log-scroll').evaluate((el) => el.scrollTo(0, el.scrollHeight));
    await green.waitFor();
    expect(await green.locator('.ansi-green-fg').count()).toBeGreaterThan(0);
    // Write -> visible, per line seen arriving live (before the build ended).
    const rows = (await admin.evaluate('window.__rows')) as Array<[string, number]>;
    // The first time each line's row appeared (a virtualised row can be drawn again later).
    const firstSeen = new Map<number, number>();
    for (const [text, at] of rows) {
      const m = /green line (\d+) up=(\d+\.\d+)/.exec(text);
      if (m && !firstSeen.has(Number(m[1]))) firstSeen.set(Number(m[1]), at - (bootMs + Number(m[2]) * 1000));
    }
    const lat = [...firstSeen.values()];
    expect(lat.length).toBeGreaterThan(5);
    lat.sort((a, b) => a - b);
    const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!.toFixed(0);
    console.log(`[dashboard] log line written by the build -> row in the page: p50 ${q(0.5)} ms, p90 ${q(0.9)} ms, max ${q(1)} ms over ${lat.length} lines (10 ms clock resolution; the lines written while the connection was down wait for the browser's reconnect, retry 1 s)`);
    await screenshot(admin, 'log-light');
  });

  it('cancels a build and retries a failed node for an admin, and offers neither to a read-only key', async () => {
    const failing = await submitSpec(cluster.coord, { name: 'fails', nodes: { broken: inline('FROM kiln/busybox:1\nRUN echo about to fail && false\n', { labels: DOCKER, no_cache: true, retry: false }) } });
    await waitForBuild(cluster.coord, failing);
    // A build that cannot start (no agent has its label): it stays cancellable.
    const stuck = await submitSpec(cluster.coord, { name: 'stuck', nodes: { nowhere: inline('FROM kiln/busybox:1\n', { labels: { kind: 'none' } }) } });

    const { page: reader, errors: readerErrors } = await signedIn(readKey);
    await reader.goto(`/builds/${stuck}`);
    await expect.poll(async () => reader.getByTestId('build-state').textContent(), { timeout: 30_000 }).toContain('pending');
    expect(await reader.getByRole('button', { name: 'Cancel build' }).count()).toBe(0);
    await reader.goto(`/builds/${failing}`);
    await reader.locator('.dag-node[data-node="broken"]').click();
    await reader.locator('aside.pane').waitFor();
    expect(await reader.getByRole('button', { name: /Retry broken/ }).count()).toBe(0);
    await reader.goto('/agents');
    await reader.locator('tr[data-agent="noop-1"]').waitFor();
    expect(await reader.getByRole('button', { name: /^(Pause|Drain|Resume) / }).count()).toBe(0);
    expect(readerErrors).toEqual([]);

    // The admin retries the failed node: a second attempt runs (and fails again).
    await admin.goto(`/builds/${failing}`);
    await admin.locator('.dag-node[data-node="broken"]').click();
    await admin.getByRole('button', { name: /Retry broken/ }).click();
    await waitFor('a second attempt of the failed node', async () => {
      const b = await getBuild(cluster.coord, failing);
      return b.nodes[0]!.attempts.length === 2 && b.state === 'failed';
    });
    await screenshot(admin, 'node-pane-light');

    // The admin is offered the cancel, and it cancels.
    await admin.goto(`/builds/${stuck}`);
    await admin.getByRole('button', { name: 'Cancel build' }).click();
    await admin.getByRole('button', { name: 'Confirm cancel' }).click();
    await expect.poll(async () => admin.getByTestId('build-state').textContent(), { timeout: 30_000 }).toContain('cancelled');
    expect((await getBuild(cluster.coord, stuck)).state).toBe('cancelled');
  });

  it('shows a paused agent as paused on the agents page', async () => {
    await admin.goto('/agents');
    const row = admin.locator('tr[data-agent="noop-2"]');
    await row.waitFor();
    expect(await row.getAttribute('data-control')).toBe('active');
    const r = await kiln(['agents', 'pause', 'noop-2', '--reason', 'disk swap'], cluster.coord.cliEnv);
    expect(r.code).toBe(0);
    // Live: the row changes without a reload.
    await expect.poll(async () => row.getAttribute('data-control'), { timeout: 30_000 }).toBe('paused');
    expect(await row.textContent()).toContain('paused');
    expect(await row.textContent()).toContain('disk swap');
    await screenshot(admin, 'agents-light');
    await admin.goto('/dead-letters');
    await admin.locator('main').waitFor();
    await screenshot(admin, 'dead-letters-light');
    expect(adminErrors).toEqual([]);
    await kiln(['agents', 'resume', 'noop-2'], cluster.coord.cliEnv);
  });

  it('renders every page in the dark theme (screenshots)', async () => {
    const { page, errors } = await signedIn(cluster.coord.apiToken, 'dark');
    // The page background follows prefers-color-scheme: dark here, light on the admin's page.
    const brightness = async (p: Page) => {
      const bg = (await p.evaluate('getComputedStyle(document.body).backgroundColor')) as string;
      const rgb = (bg.match(/\d+/g) ?? []).map(Number);
      expect(rgb.length).toBeGreaterThanOrEqual(3);
      return (rgb[0]! + rgb[1]! + rgb[2]!) / 3;
    };
    expect(await brightness(page)).toBeLessThan(64);
    expect(await brightness(admin)).toBeGreaterThan(192);
    await page.locator('table.builds').waitFor();
    await screenshot(page, 'builds-dark');
    const list = (await cluster.coord.api<{ items: Array<{ id: string; name: string }> }>(apiPath.builds())).body.items;
    const dag = list.find((b) => b.name === 'dag-live')!;
    await page.goto(`/builds/${dag.id}`);
    await page.locator('.dag-node[data-node="package"]').waitFor();
    await screenshot(page, 'build-dark');
    await page.locator('.dag-node[data-node="test"]').click();
    await page.locator('aside.pane').waitFor();
    await screenshot(page, 'node-pane-dark');
    await page.goto('/agents');
    await page.locator('tr[data-agent="noop-1"]').waitFor();
    await screenshot(page, 'agents-dark');
    await page.goto('/dead-letters');
    await page.locator('main').waitFor();
    await screenshot(page, 'dead-letters-dark');
    await page.goto(`/builds/${list.find((b) => b.name === 'log-live')!.id}?node=logs`);
    await page.locator('.log-pane').waitFor();
    await screenshot(page, 'log-dark');
    expect(errors).toEqual([]);
  });
});
