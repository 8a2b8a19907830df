/**
 * The data dir lock with real coordinators and real processes that take it through the
 * compiled lockDataDir: a second coordinator is refused (exit 78) by the first one's pid;
 * a clean stop removes the lock; a holder that was SIGKILLed, that left a zombie nobody
 * reaps, or whose pid now belongs to another process is taken over with a warning in the
 * log; of two takers starting together on a stale lock exactly one wins. Linux only.
 */
import { spawn } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { bootId, procStat, type LockIdentity } from '../../shared/index.js';
import { jsonLogLines, Proc, REPO, requireBuilt, spawnKiln, startCoordinator, StopWaiting, tempDir, waitFor } from '../helpers/cluster.js';

const DATA_DIR_JS = pathToFileURL(join(REPO, 'dist', 'coordinator', 'state', 'data-dir.js')).href;

/** Takes the lock with the compiled lockDataDir, prints LOCKED <pid> or REFUSED <message>, and holds it until killed. */
const HOLDER = `
const [url, dir] = process.argv.slice(1);
const { lockDataDir } = await import(url);
try {
  await lockDataDir(dir, (s) => console.log('TOOKOVER ' + s.reason));
  console.log('LOCKED ' + process.pid);
  setInterval(() => {}, 1 << 30);
} catch (err) {
  console.log('REFUSED ' + err.code + ' ' + err.message);
  process.exitCode = 78;
}
`;

const procs: Proc[] = [];

function track(p: Proc): Proc {
  procs.push(p);
  return p;
}

function holder(dataDir: string): Proc {
  return track(new Proc(spawn(process.execPath, ['--input-type=module', '-e', HOLDER, DATA_DIR_JS, dataDir], { stdio: ['ignore', 'pipe', 'pipe'] })));
}

/** The first LOCKED/REFUSED line a holder printed. */
function outcome(p: Proc): Promise<string> {
  return waitFor('the holder to take or be refused the lock', () => {
    const m = /^(LOCKED|REFUSED) .*$/m.exec(p.stdout);
    if (!m && !p.running) throw new StopWaiting(`holder exited with ${p.exitCode}: ${p.stderr}`);
    return m?.[0];
  });
}

function warnings(p: Proc): string[] {
  return jsonLogLines(p.stderr)
    .filter((l) => l.level === 40)
    .map((l) => String(l.msg));
}

/** Starts a coordinator expected to be refused; fails at once (not at a timeout) if it listens instead. */
async function startRefused(dataDir: string): Promise<Proc> {
  const p = track(spawnKiln(['coordinator', '--data-dir', dataDir, '--listen', '127.0.0.1:0']));
  await waitFor('the coordinator to exit or listen', () => !p.running || /listening on/.test(p.stderr));
  expect(p.running, `it started instead of being refused:\n${p.stderr}`).toBe(false);
  return p;
}

async function zombie(pid: number): Promise<boolean> {
  const st = await procStat(pid);
  return typeof st === 'object' && st.state === 'Z';
}

describe.runIf(process.platform === 'linux')('coordinator data dir lock', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let dataDir: string;
  let lockPath: string;

  beforeAll(async () => {
    requireBuilt();
    dir = await tempDir('lock');
    dataDir = join(dir.path, 'data');
    lockPath = join(dataDir, 'lock');
    const c = await startCoordinator({ dataDir });
    await c.proc.stop();
  });

  afterEach(async () => {
    for (const p of procs.splice(0)) await p.kill9();
  });

  afterAll(async () => {
    await dir?.cleanup();
  });

  it('refuses a second coordinator by the first one’s pid, and a clean stop removes the lock', async () => {
    const first = await startCoordinator({ dataDir });
    track(first.proc);
    const rec = JSON.parse(await readFile(lockPath, 'utf8')) as LockIdentity;
    expect(rec).toMatchObject({ pid: first.proc.child.pid, hostname: hostname(), boot_id: await bootId() });

    const second = await startRefused(dataDir);
    expect(second.exitCode).toBe(78);
    expect(second.stderr).toContain(`data dir ${dataDir} is locked by pid ${first.proc.child.pid} on host ${hostname()} since ${rec.started_at}`);

    await first.proc.stop();
    expect(first.proc.exitCode).toBe(0);
    await expect(stat(lockPath)).rejects.toMatchObject({ code: 'ENOENT' });
    const third = await startCoordinator({ dataDir });
    track(third.proc);
    expect(warnings(third.proc).filter((w) => w.includes('took over'))).toEqual([]);
    await third.proc.stop();
  });

  it('takes over the lock of a SIGKILLed holder and logs it', async () => {
    const h = holder(dataDir);
    expect(await outcome(h)).toBe(`LOCKED ${h.child.pid}`);
    await h.kill9();
    expect(JSON.parse(await readFile(lockPath, 'utf8'))).toMatchObject({ pid: h.child.pid });

    const c = await startCoordinator({ dataDir });
    track(c.proc);
    const msg = warnings(c.proc).join('\n');
    expect(msg).toContain(`took over the stale lock ${lockPath} of pid ${h.child.pid} on host ${hostname()}`);
    expect(msg).toContain(`pid ${h.child.pid} is not running`);
    expect(JSON.parse(await readFile(lockPath, 'utf8'))).toMatchObject({ pid: c.proc.child.pid });

    // and a SIGKILLed coordinator's lock is taken over by the next one
    await c.proc.kill9();
    const next = await startCoordinator({ dataDir });
    track(next.proc);
    expect(warnings(next.proc).join('\n')).toContain(`pid ${c.proc.child.pid} is not running`);
    await next.proc.stop();
  });

  it('takes over the lock of a holder that is a zombie nobody reaps', async () => {
    // sh starts the holder, then becomes `sleep`, which never waits for its child
    const sh = track(
      new Proc(spawn('sh', ['-c', `"${process.execPath}" --input-type=module -e "$0" "$@" & exec sleep 100000`, HOLDER, DATA_DIR_JS, dataDir], { stdio: ['ignore', 'pipe', 'pipe'] })),
    );
    const line = await outcome(sh);
    expect(line).toMatch(/^LOCKED \d+$/);
    const pid = Number(line.split(' ')[1]);
    process.kill(pid, 'SIGKILL');
    await waitFor('the killed holder to be a zombie', () => zombie(pid));
    expect(() => process.kill(pid, 0)).not.toThrow(); // the old check saw it alive
    expect(JSON.parse(await readFile(lockPath, 'utf8'))).toMatchObject({ pid });

    const c = await startCoordinator({ dataDir });
    track(c.proc);
    expect(warnings(c.proc).join('\n')).toContain(`pid ${pid} has exited (a zombie, not reaped by its parent)`);
    expect(await zombie(pid)).toBe(true); // still a zombie: it was not reaped behind our back
    await c.proc.stop();
  });

  it('treats a lock whose pid now belongs to another process as stale', async () => {
    const sleeper = track(new Proc(spawn('sleep', ['100000'], { stdio: 'ignore' })));
    const pid = sleeper.child.pid!;
    const st = await waitFor('the sleep to start', async () => {
      const s = await procStat(pid);
      return typeof s === 'object' ? s : null;
    });
    const rec: LockIdentity = { pid, boot_id: await bootId(), start_time: st.startTime - 1, hostname: hostname(), started_at: new Date().toISOString() };
    await writeFile(lockPath, `${JSON.stringify(rec)}\n`);
    const c = await startCoordinator({ dataDir });
    track(c.proc);
    expect(warnings(c.proc).join('\n')).toContain(`pid ${pid} now belongs to another process`);
    await c.proc.stop();

    // the same pid with its real start time is a live holder
    await writeFile(lockPath, `${JSON.stringify({ ...rec, start_time: st.startTime })}\n`);
    const refused = await startRefused(dataDir);
    expect(refused.exitCode).toBe(78);
    expect(refused.stderr).toContain(`locked by pid ${pid} on host ${hostname()}`);
  });

  it('refuses while the holder has the socket even when the file still names a dead process', async () => {
    // the moment between a holder binding its socket and replacing a stale record: a
    // second taker must not judge the file then (without the socket it would take over)
    const h = holder(dataDir);
    expect(await outcome(h)).toBe(`LOCKED ${h.child.pid}`);
    const stale = `${JSON.stringify({ pid: 999999999, boot_id: await bootId(), start_time: 1, hostname: hostname(), started_at: new Date().toISOString() })}\n`;
    await writeFile(lockPath, stale);
    const refused = await startRefused(dataDir);
    expect(refused.exitCode).toBe(78);
    expect(refused.stderr).toMatch(/is locked: another process holds its lock socket .*pid 999999999 is not running/);
    expect(await readFile(lockPath, 'utf8')).toBe(stale);
    // once the holder is gone (SIGKILL), the same file is taken over
    await h.kill9();
    const c = await startCoordinator({ dataDir });
    track(c.proc);
    expect(warnings(c.proc).join('\n')).toContain('pid 999999999 is not running');
    await c.proc.stop();
  });

  it('lets exactly one of two takers starting together on a stale lock win', async () => {
    for (let round = 0; round < 4; round++) {
      // the previous round's winner was SIGKILLed: its lock is stale
      const pair = [holder(dataDir), holder(dataDir)];
      const lines = await Promise.all(pair.map(outcome));
      expect(lines.filter((l) => l.startsWith('LOCKED'))).toHaveLength(1);
      expect(lines.filter((l) => l.startsWith('REFUSED E_LOCKED'))).toHaveLength(1);
      for (const p of pair) await p.kill9();
    }
    // two real coordinators
    const [a, b] = [0, 1].map(() => track(spawnKiln(['coordinator', '--data-dir', dataDir, '--listen', '127.0.0.1:0']))) as [Proc, Proc];
    const loser = await Promise.race([a.exited.then(() => a), b.exited.then(() => b)]);
    const winner = loser === a ? b : a;
    expect(loser.exitCode).toBe(78);
    expect(loser.stderr).toMatch(/is locked/);
    await waitFor('the winner to listen', () => {
      if (!winner.running) throw new StopWaiting(`winner exited with ${winner.exitCode}: ${winner.stderr}`);
      return /listening on/.test(winner.stderr);
    });
    await winner.stop();
    expect(winner.exitCode).toBe(0);
  });
});
