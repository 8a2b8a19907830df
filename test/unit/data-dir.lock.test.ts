/**
 * The data dir lock (lockDataDir over shared/process-lock.ts) against real processes and
 * real files: a live holder is refused by name; a holder that exited, a pid that now
 * belongs to another process, a record from another boot and a zombie are stale and taken
 * over; older bare-pid lock files and unparseable content are understood; two takers
 * racing on a stale lock never both win. Linux only (/proc, abstract sockets).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, readlink, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { lockDataDir } from '../../coordinator/state/data-dir.js';
import { coerceError, bootId, isKilnError, procStat, type LockIdentity, type StaleLock } from '../../shared/index.js';

let dir: string;
let lockPath: string;
const children: ChildProcess[] = [];
const releases: Array<() => Promise<void>> = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-lock-'));
  lockPath = join(dir, 'lock');
});

afterEach(async () => {
  for (const r of releases.splice(0)) await r();
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

async function until<T>(fn: () => Promise<T | null | undefined | false>): Promise<T> {
  for (;;) {
    const v = await fn();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Runs `sh -c script`; resolves with the first line it prints (a pid). */
async function spawnPrinting(script: string): Promise<{ child: ChildProcess; line: string }> {
  const child = spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'ignore'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const line = await until(async () => (out.includes('\n') ? out.split('\n')[0]! : null));
  return { child, line };
}

async function identityOf(pid: number): Promise<LockIdentity> {
  const st = await procStat(pid);
  if (typeof st !== 'object') throw new Error(`no /proc/${pid}/stat`);
  return { pid, boot_id: await bootId(), start_time: st.startTime, hostname: hostname(), started_at: '2020-01-02T03:04:05.000Z' };
}

async function writeRecord(rec: LockIdentity): Promise<void> {
  await writeFile(lockPath, `${JSON.stringify(rec)}\n`);
}

async function lock(): Promise<{ release: () => Promise<void>; stale: StaleLock | null }> {
  let stale: StaleLock | null = null;
  const release = await lockDataDir(dir, (s) => (stale = s));
  releases.push(release);
  return { release, stale };
}

async function lockError(): Promise<Error> {
  try {
    releases.push(await lockDataDir(dir));
  } catch (err) {
    expect(isKilnError(err, 'E_LOCKED')).toBe(true);
    return coerceError(err);
  }
  throw new Error('the lock was taken');
}

async function sleeper(): Promise<number> {
  const child = spawn('sleep', ['1000'], { stdio: 'ignore' });
  children.push(child);
  const pid = child.pid!;
  await until(async () => typeof (await procStat(pid)) === 'object');
  return pid;
}

describe.runIf(process.platform === 'linux')('data dir lock', () => {
  it('writes an identity record, refuses a second taker by pid, host and time, and releases', async () => {
    const first = await lock();
    expect(first.stale).toBeNull();
    const rec = JSON.parse(await readFile(lockPath, 'utf8')) as LockIdentity;
    expect(rec).toMatchObject({ pid: process.pid, boot_id: await bootId(), hostname: hostname() });
    expect(rec.start_time).toBe(((await procStat(process.pid)) as { startTime: number }).startTime);
    expect(Number.isNaN(Date.parse(rec.started_at))).toBe(false);

    const err = await lockError();
    expect(err.message).toContain(`locked by pid ${process.pid} on host ${hostname()} since ${rec.started_at}`);
    expect(err.message).toContain(lockPath);

    await first.release();
    await expect(stat(lockPath)).rejects.toMatchObject({ code: 'ENOENT' });
    await first.release(); // idempotent
    const again = await lock();
    expect(again.stale).toBeNull();
    expect(JSON.parse(await readFile(lockPath, 'utf8'))).toMatchObject({ pid: process.pid });
  });

  it('refuses a record of a live process even when no socket backs it (another network namespace)', async () => {
    const pid = await sleeper();
    await writeRecord(await identityOf(pid));
    const err = await lockError();
    expect(err.message).toContain(`locked by pid ${pid} on host ${hostname()} since 2020-01-02T03:04:05.000Z`);
    expect(JSON.parse(await readFile(lockPath, 'utf8'))).toMatchObject({ pid });
  });

  it('refuses a record from another pid namespace on this boot (another container), whatever its pid means here', async () => {
    await writeRecord({ ...(await identityOf(process.pid)), pid: 999_999_999, start_time: 1, pid_ns: 'pid:[1]' });
    const err = await lockError();
    expect(err.message).toMatch(/locked by pid 999999999 on host .*another pid namespace \(pid:\[1\]: another container\).*remove the lock file if nothing runs there/);
    // the same record from this pid namespace names a pid that does not exist: taken over
    await writeRecord({ ...(await identityOf(process.pid)), pid: 999_999_999, start_time: 1, pid_ns: await readlink('/proc/self/ns/pid') });
    const { stale } = await lock();
    expect(stale).toMatchObject({ holder: { pid: 999_999_999 }, reason: expect.stringContaining('not running') });
  });

  it('takes over the lock of a process that has exited, and reports it', async () => {
    const child = spawn('sleep', ['1000'], { stdio: 'ignore' });
    const pid = child.pid!;
    await until(async () => typeof (await procStat(pid)) === 'object');
    const rec = await identityOf(pid);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    await until(async () => (await procStat(pid)) === 'gone');
    await writeRecord(rec);

    const { stale } = await lock();
    expect(stale).toMatchObject({ holder: { pid, start_time: rec.start_time }, reason: `pid ${pid} is not running` });
    expect(stale!.message).toContain(`took over the stale lock ${lockPath} of pid ${pid}`);
    expect(JSON.parse(await readFile(lockPath, 'utf8'))).toMatchObject({ pid: process.pid });
  });

  it('treats a live pid with another start time as reused, and a record from another boot as stale', async () => {
    const pid = await sleeper();
    const rec = await identityOf(pid);
    await writeRecord({ ...rec, start_time: rec.start_time! + 1 });
    const reused = await lock();
    expect(reused.stale?.reason).toMatch(new RegExp(`pid ${pid} now belongs to another process`));
    await reused.release();

    await writeRecord({ ...rec, boot_id: '00000000-0000-4000-8000-000000000000' });
    const rebooted = await lock();
    expect(rebooted.stale?.reason).toMatch(/before the last reboot/);
    await rebooted.release();

    // this process's own pid, from a boot when it belonged to an earlier coordinator
    await writeRecord({ ...(await identityOf(process.pid)), boot_id: 'ffffffff-0000-4000-8000-000000000000' });
    expect((await lock()).stale?.holder).toMatchObject({ pid: process.pid });
  });

  it('treats a zombie (killed, never reaped) as dead', async () => {
    // the inner sleep's parent becomes the outer sleep (exec), which never waits for it
    const { line } = await spawnPrinting('sleep 1000 & echo $!; exec sleep 1000');
    const pid = Number(line);
    const rec = await identityOf(pid);
    process.kill(pid, 'SIGKILL');
    const st = await until(async () => {
      const s = await procStat(pid);
      return typeof s === 'object' && s.state === 'Z' ? s : null;
    });
    expect(st.startTime).toBe(rec.start_time);
    expect(() => process.kill(pid, 0)).not.toThrow(); // what fooled the old lock
    await writeRecord(rec);

    const { stale } = await lock();
    expect(stale?.reason).toBe(`pid ${pid} has exited (a zombie, not reaped by its parent)`);
  });

  it('understands a bare pid from older versions', async () => {
    const pid = await sleeper();
    await writeFile(lockPath, `${pid}\n`);
    expect((await lockError()).message).toContain(`locked by pid ${pid} (another coordinator is using it`);

    // written before this boot: whatever runs under that pid now is not the writer
    await utimes(lockPath, new Date('2001-01-01'), new Date('2001-01-01'));
    expect((await lock()).stale).toMatchObject({ holder: { pid }, reason: 'it was written before the last reboot' });
    await releases.pop()!();

    // written before the process under that pid started (dated a minute back, after the boot)
    const later = await sleeper();
    const btime = Number(/^btime (\d+)$/m.exec(await readFile('/proc/stat', 'utf8'))![1]) * 1000;
    const past = new Date(Math.max(Date.now() - 60_000, btime + 5_000));
    await writeFile(lockPath, `${later}\n`);
    await utimes(lockPath, past, past);
    expect((await lock()).stale?.reason).toBe(`pid ${later} started after the lock was written (the pid was reused)`);
    await releases.pop()!();

    await writeFile(lockPath, `${process.pid}\n`);
    expect((await lock()).stale?.reason).toMatch(/is this process now/);
  });

  it('takes over unparseable content or a dead record only when no live holder has the socket', async () => {
    const first = await lock();
    // as if the holder had bound the socket and not yet written its record
    await writeFile(lockPath, '999999999\n');
    expect((await lockError()).message).toMatch(/holds its lock socket .*names pid 999999999, but pid 999999999 is not running/);
    expect(await readFile(lockPath, 'utf8')).toBe('999999999\n');
    await writeFile(lockPath, 'garbage');
    const err = await lockError();
    expect(err.message).toMatch(/holds its lock socket .*names no holder/);
    expect(await readFile(lockPath, 'utf8')).toBe('garbage'); // not deleted
    await first.release();
    expect(await readFile(lockPath, 'utf8')).toBe('garbage'); // not ours, so release keeps it

    const { stale } = await lock();
    expect(stale).toMatchObject({ holder: null, raw: 'garbage', reason: 'its content is not a lock record' });
  });

  it('lets exactly one of two simultaneous takers of a stale lock win', async () => {
    for (let round = 0; round < 20; round++) {
      await writeFile(lockPath, '999999999\n'); // a pid that cannot exist
      const results = await Promise.allSettled([lockDataDir(dir), lockDataDir(dir)]);
      const won = results.filter((r): r is PromiseFulfilledResult<() => Promise<void>> => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(won).toHaveLength(1);
      expect(isKilnError(lost[0]!.reason, 'E_LOCKED')).toBe(true);
      await won[0]!.value();
    }
  });
});
