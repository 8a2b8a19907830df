/**
 * Dashboard benchmark (issue 13): the web dashboard measured in a real headless Chromium
 * (Debian's /usr/bin/chromium through playwright-core) against a real coordinator (in this
 * process, persistence on) and real `kiln agent --executor noop` processes.
 *
 * 1. A 1,000-node DAG (20 layers of 50, each node needing two of the layer before): from
 *    opening its build page to the first node drawn and to "interactive" (a click on a node
 *    has opened its pane), in a fresh browser context (no cached layout) and reopened (the
 *    layout cached). Comparator in the same page: fetching the same build's JSON and putting
 *    1,000 plain <div>s in the document (no layout, no graph): the floor of showing the data.
 * 2. A 200,000-line log (the noop executor's KILN_NOOP_LOG, ANSI colours): from opening the
 *    node's log to every line loaded, then scrolling the whole log at 4,000 px a frame:
 *    frame intervals p50/p95/max against the same page's idle frame interval (the display's
 *    own rate: the floor).
 * 3. 100 builds of 5 nodes submitted at once with the builds list open: the longest frame
 *    gap on the page while they run, and the time until the list shows all 100 finished.
 *
 *   node dist/scripts/bench/dashboard.js [--runs 3] [--help]
 *
 * Targets (issue 13): the 1,000-node DAG interactive within 2 s of opening the page; the
 * 200,000-line log scrolls smoothly (p95 frame within 2x the idle frame); 100 builds
 * updating at once do not freeze the page (no frame gap over 250 ms).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { loadCoordinatorConfig } from '../../coordinator/config.js';
import { startCoordinator, type RunningCoordinator } from '../../coordinator/coordinator.js';
import { apiPath, createLogger, isBuildTerminal } from '../../shared/index.js';
import { fmt, machineLine, median, percentile } from './bench-util.js';

const args = process.argv.slice(2);
if (args.includes('--help')) {
  console.log('usage: node dist/scripts/bench/dashboard.js [--runs 3]   (needs /usr/bin/chromium and npm run build)');
  process.exit(0);
}
const RUNS = Number(args[args.indexOf('--runs') + 1] ?? 3) || 3;
const CHROMIUM = '/usr/bin/chromium';
const KILN = resolve(import.meta.dirname, '..', '..', 'cli', 'main.js');
const LOG_LINES = 200_000;

interface Bench {
  coord: RunningCoordinator;
  agents: ChildProcess[];
  dir: string;
  browser: Browser;
}

function agent(b: { coord: RunningCoordinator; dir: string }, name: string, labels: string, env: Record<string, string>): ChildProcess {
  const p = spawn(process.execPath, [KILN, 'agent', '--coordinator', b.coord.url, '--token-file', join(b.dir, 'data', 'tokens', 'agent'), '--name', name, '--labels', labels, '--executor', 'noop', '--max-jobs', '100', '--work-dir', join(b.dir, name)], {
    env: { ...process.env, ...env, KILN_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return p;
}

async function start(): Promise<Bench> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing (apt-get install chromium)`);
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-dashboard-'));
  const config = loadCoordinatorConfig(
    { dataDir: join(dir, 'data'), listen: '127.0.0.1:0', logLevel: 'silent', logFormat: 'json', rateLimitPerKey: 'off', rateLimitPerAddress: 'off' },
    { env: {}, arch: process.arch, isTTY: false },
  );
  const coord = await startCoordinator(config, createLogger({ name: 'bench', level: 'silent', format: 'json' }));
  const b = { coord, dir };
  const agents = [agent(b, 'dag-1', 'kind=dag', {}), agent(b, 'dag-2', 'kind=dag', {}), agent(b, 'logs', 'kind=log', { KILN_NOOP_LOG: String(LOG_LINES) })];
  const deadline = Date.now() + 60_000;
  while (coord.engine.agents.connected().length < agents.length) {
    if (Date.now() > deadline) throw new Error('the noop agents did not connect');
    await new Promise((r) => setTimeout(r, 50));
  }
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return { coord, agents, dir, browser };
}

async function stop(b: Bench): Promise<void> {
  await b.browser.close();
  for (const a of b.agents) a.kill('SIGTERM');
  await Promise.all(b.agents.map((a) => new Promise((r) => (a.exitCode !== null ? r(null) : a.once('exit', r)))));
  await b.coord.stop();
  await rm(b.dir, { recursive: true, force: true });
}

async function api<T>(b: Bench, path: string, init: RequestInit = {}): Promise<T> {
  const res = await fetch(`${b.coord.url}${path}`, { ...init, headers: { authorization: `Bearer ${b.coord.tokens.apiToken}`, 'content-type': 'application/json', ...(init.headers as Record<string, string> | undefined) } });
  if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

async function submit(b: Bench, spec: object): Promise<string> {
  return (await api<{ id: string }>(b, apiPath.builds(), { method: 'POST', body: JSON.stringify(spec) })).id;
}

async function finished(b: Bench, id: string): Promise<void> {
  for (;;) {
    const s = b.coord.engine.buildSummary(id)?.state;
    if (s && isBuildTerminal(s)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A browser context signed in with the admin token (the session cookie set through the API). */
async function signedIn(b: Bench): Promise<{ ctx: BrowserContext; page: Page }> {
  const ctx = await b.browser.newContext({ baseURL: b.coord.url, viewport: { width: 1440, height: 900 } });
  const r = await ctx.request.post(apiPath.session(), { data: { key: b.coord.tokens.apiToken }, headers: { origin: b.coord.url } });
  if (!r.ok()) throw new Error(`sign-in: ${r.status()}`);
  return { ctx, page: await ctx.newPage() };
}

const NODE = 'FROM kiln/busybox:1\n';

function bigDag(): object {
  const nodes: Record<string, object> = {};
  for (let layer = 0; layer < 20; layer++) {
    for (let i = 0; i < 50; i++) {
      const needs = layer === 0 ? [] : [`l${layer - 1}-n${i}`, `l${layer - 1}-n${(i + 7) % 50}`];
      nodes[`l${layer}-n${i}`] = { dockerfile_inline: NODE, labels: { kind: 'dag' }, needs };
    }
  }
  return { name: 'dag-1000', nodes };
}

/** Opens the build page: ms to the first node drawn, and to a click on a node answered by its pane. */
async function openDag(page: Page, id: string): Promise<{ firstNodeMs: number; interactiveMs: number; floorMs: number }> {
  const t0 = Date.now();
  await page.goto(`/builds/${id}`);
  const first = page.locator('.dag-node').first();
  await first.waitFor({ timeout: 60_000 });
  const firstNodeMs = Date.now() - t0;
  await first.click();
  await page.locator('aside.pane').waitFor({ timeout: 60_000 });
  const interactiveMs = Date.now() - t0;
  // The comparator, in the same page and origin: the build's JSON fetched and 1,000 plain divs drawn.
  const floorMs = (await page.evaluate(`(async () => {
    const t0 = performance.now();
    const b = await (await fetch(${JSON.stringify(apiPath.build(id))})).json();
    const box = document.createElement('div');
    for (const n of b.nodes) { const d = document.createElement('div'); d.textContent = n.name + ' ' + n.state; box.appendChild(d); }
    document.body.appendChild(box);
    box.getBoundingClientRect();
    await new Promise((r) => requestAnimationFrame(() => r(null)));
    const ms = performance.now() - t0;
    box.remove();
    return ms;
  })()`)) as number;
  await page.keyboard.press('Escape');
  return { firstNodeMs, interactiveMs, floorMs };
}

/**
 * Frame intervals (ms) over `count` animation frames, scrolling `selector` by `step` px each
 * frame (0: idle), and in how many frames the first row drawn (`[data-line]`) had changed
 * since the frame before: the rows really moved, the page is not just idle.
 */
async function frames(page: Page, selector: string, step: number, count: number): Promise<{ intervals: number[]; moved: number }> {
  return (await page.evaluate(`new Promise((resolve) => {
    const el = document.querySelector(${JSON.stringify(selector)});
    const out = [];
    let last = performance.now();
    let n = 0;
    let moved = 0;
    let row = null;
    const tick = (t) => {
      out.push(t - last);
      last = t;
      const first = el && el.querySelector('[data-line]');
      const now = first ? first.getAttribute('data-line') : null;
      if (now !== row) moved++;
      row = now;
      if (el && ${step} > 0) el.scrollTop = (el.scrollTop + ${step}) % Math.max(1, el.scrollHeight - el.clientHeight);
      if (++n < ${count}) requestAnimationFrame(tick); else resolve({ intervals: out.slice(1), moved });
    };
    requestAnimationFrame(tick);
  })`)) as { intervals: number[]; moved: number };
}

async function logRun(b: Bench, page: Page): Promise<{ loadMs: number; scroll: number[]; idle: number[]; movedShare: number }> {
  const id = await submit(b, { name: 'log-200k', nodes: { big: { dockerfile_inline: NODE, labels: { kind: 'log' } } } });
  await finished(b, id);
  await page.goto(`/builds/${id}`);
  await page.locator('.dag-node[data-node="big"]').click();
  const t0 = Date.now();
  const pane = page.locator('.log-pane');
  await pane.waitFor();
  for (;;) {
    if ((await pane.getAttribute('data-state')) === 'ended' && Number(await pane.getAttribute('data-lines')) >= LOG_LINES) break;
    if (Date.now() - t0 > 120_000) throw new Error(`the log did not load: ${await pane.getAttribute('data-lines')} lines`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const loadMs = Date.now() - t0;
  const idle = await frames(page, '.log-pane .log-scroll', 0, 120);
  const scroll = await frames(page, '.log-pane .log-scroll', 4000, 600);
  return { loadMs, scroll: scroll.intervals, idle: idle.intervals, movedShare: scroll.moved / 600 };
}

async function burstRun(b: Bench, page: Page): Promise<{ maxGapMs: number; p99GapMs: number; allDoneMs: number }> {
  await page.goto('/builds');
  await page.locator('.list-head').waitFor();
  await page.evaluate(`window.__gaps = []; (() => { let last = performance.now(); const f = (t) => { window.__gaps.push(t - last); last = t; if (!window.__stopGaps) requestAnimationFrame(f); }; requestAnimationFrame(f); })()`);
  const t0 = Date.now();
  const ids = await Promise.all(
    Array.from({ length: 100 }, (_, i) => {
      const nodes: Record<string, object> = {};
      for (let k = 0; k < 5; k++) nodes[`s${k}`] = { dockerfile_inline: NODE, labels: { kind: 'dag' }, needs: k === 0 ? [] : [`s${k - 1}`] };
      return submit(b, { name: `burst-${i}`, nodes });
    }),
  );
  await Promise.all(ids.map((id) => finished(b, id)));
  // Every row finished on the page (the list shows the newest 100 first).
  for (;;) {
    const done = (await page.evaluate(`[...document.querySelectorAll('tr[data-build]')].filter((r) => r.textContent.includes('success')).length`)) as number;
    if (done >= 100) break;
    if (Date.now() - t0 > 120_000) throw new Error(`the list showed ${done} of 100 builds finished`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const allDoneMs = Date.now() - t0;
  const gaps = (await page.evaluate('window.__stopGaps = true; window.__gaps')) as number[];
  return { maxGapMs: Math.max(...gaps), p99GapMs: percentile(gaps, 99), allDoneMs };
}

async function main(): Promise<void> {
  console.log(`# dashboard benchmark: headless Chromium (${CHROMIUM}), a real coordinator (persistence on) and noop agents; ${RUNS} runs; medians and min–max`);
  console.log(`# ${machineLine()}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  const b = await start();
  try {
    console.log(`# chromium ${b.browser.version()}`);
    const dagId = await submit(b, bigDag());
    await finished(b, dagId);
    const cold: Array<Awaited<ReturnType<typeof openDag>>> = [];
    const warm: Array<Awaited<ReturnType<typeof openDag>>> = [];
    const logs: Array<Awaited<ReturnType<typeof logRun>>> = [];
    const bursts: Array<Awaited<ReturnType<typeof burstRun>>> = [];
    for (let r = 0; r < RUNS; r++) {
      const { ctx, page } = await signedIn(b); // a fresh context: no cached layout
      cold.push(await openDag(page, dagId));
      warm.push(await openDag(page, dagId));
      logs.push(await logRun(b, page));
      bursts.push(await burstRun(b, page));
      await ctx.close();
      console.log(
        `run ${r + 1}: DAG 1,000 nodes first node ${fmt(cold[r]!.firstNodeMs, 0)} ms, interactive ${fmt(cold[r]!.interactiveMs, 0)} ms (reopened ${fmt(warm[r]!.interactiveMs, 0)} ms; floor ${fmt(cold[r]!.floorMs, 0)} ms); ` +
          `log ${LOG_LINES} lines loaded in ${fmt(logs[r]!.loadMs, 0)} ms, scroll frame p95 ${fmt(percentile(logs[r]!.scroll, 95), 1)} ms (idle ${fmt(median(logs[r]!.idle), 1)} ms); ` +
          `100 builds: longest frame gap ${fmt(bursts[r]!.maxGapMs, 0)} ms, all shown finished after ${fmt(bursts[r]!.allDoneMs, 0)} ms`,
      );
    }
    const med = (xs: number[], d = 0) => `${fmt(median(xs), d)} (${fmt(Math.min(...xs), d)}–${fmt(Math.max(...xs), d)})`;
    const interactive = cold.map((c) => c.interactiveMs);
    console.log(`DAG of 1,000 nodes, fresh context: first node ${med(cold.map((c) => c.firstNodeMs))} ms, interactive ${med(interactive)} ms; reopened (layout cached): interactive ${med(warm.map((c) => c.interactiveMs))} ms`);
    console.log(`  comparator (same page: the build's JSON fetched and 1,000 plain divs drawn): ${med(cold.map((c) => c.floorMs))} ms; ratio interactive / comparator ${med(cold.map((c) => c.interactiveMs / c.floorMs), 1)}`);
    const p95 = logs.map((l) => percentile(l.scroll, 95));
    const idle = logs.map((l) => median(l.idle));
    console.log(`log of ${LOG_LINES} lines: loaded in ${med(logs.map((l) => l.loadMs))} ms; scrolling 4,000 px a frame: frame p50 ${med(logs.map((l) => median(l.scroll)), 1)} ms, p95 ${med(p95, 1)} ms, max ${med(logs.map((l) => Math.max(...l.scroll)), 1)} ms; idle frame ${med(idle, 1)} ms; ratio p95 / idle ${med(p95.map((p, i) => p / idle[i]!), 2)} (the first row drawn changed in ${med(logs.map((l) => 100 * l.movedShare), 0)} % of the frames)`);
    const gaps = bursts.map((x) => x.maxGapMs);
    console.log(`100 builds x 5 nodes at once, list open: longest frame gap ${med(gaps)} ms (p99 ${med(bursts.map((x) => x.p99GapMs), 1)} ms); all 100 shown finished after ${med(bursts.map((x) => x.allDoneMs))} ms`);
    const verdict = (ok: boolean) => (ok ? 'met' : 'missed');
    console.log(`target (issue 13) 1,000-node DAG interactive within 2 s of opening, every run: ${med(interactive)} ms -> ${verdict(Math.max(...interactive) <= 2000)}`);
    console.log(`target (issue 13) 200,000-line log scrolls smoothly (p95 frame <= 2x idle), every run: -> ${verdict(p95.every((p, i) => p <= 2 * idle[i]!))}`);
    console.log(`target (issue 13) 100 builds at once do not freeze the page (no frame gap over 250 ms), every run: -> ${verdict(Math.max(...gaps) <= 250)}`);
  } finally {
    await stop(b);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
