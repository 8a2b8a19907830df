/**
 * A lock held by one process for a directory (the coordinator's data dir), that pid
 * reuse after a reboot, a zombie, or two processes starting at the same moment cannot
 * fool.
 *
 * Two parts:
 *
 * 1. Mutual exclusion (Linux): the holder listens on an abstract-namespace Unix socket
 *    named `<name>-lock-<sha256 of the directory's device:inode and the lock file name>`.
 *    The kernel closes it when the process exits, however it exits (SIGKILL, OOM kill),
 *    and before the process becomes a zombie, so a dead holder, reaped or not, never
 *    holds it; there is no file to go stale and nothing to clean up. Binding is atomic:
 *    of two processes that try at the same moment, exactly one gets it (EADDRINUSE for the
 *    other). The socket is close-on-exec, so children do not inherit it. Where abstract
 *    sockets are not available (not Linux) only part 2 applies.
 *
 * 2. The lock file: a JSON identity record of the holder,
 *    `{ pid, boot_id, start_time, hostname, started_at }` (boot id from
 *    /proc/sys/kernel/random/boot_id, start time = field 22 of /proc/<pid>/stat in clock
 *    ticks since boot). It names the holder in the error ("locked by pid N on host H since
 *    T") and is a second check where the socket cannot see the holder: abstract sockets
 *    are per network namespace (two containers sharing one volume), and a holder that runs
 *    an older kiln (or a Node whose libuv spells the abstract address differently) has no
 *    socket. A record refuses when its process is provably alive (same boot id, the pid
 *    exists, is not a zombie (state Z or X), and has the same start time) or cannot be
 *    judged from here: a holder in another pid namespace on the same boot (another
 *    container on this kernel; its pid names nothing here) is taken as alive, and the error
 *    says so (remove the lock file by hand if nothing runs there). Anything else is stale
 *    and is taken over; the caller gets the old record to log.
 *    Older kiln versions wrote a bare pid: it counts as dead when the pid does not exist or
 *    is a zombie, is this process's own pid, started after the file was written, or the file
 *    was written before the current boot (mtime vs btime; a wall-clock step between the two
 *    can mislead these last two, which is why new files carry a boot id and start time).
 *    Content that is neither is stale (nothing in it names a holder).
 *    When /proc cannot tell (no /proc, or hidepid hides the pid) the check falls back to
 *    kill(pid, 0), as older versions did.
 *
 * Why two processes starting together cannot both win (same network namespace): the
 * socket is bound first and the lock file is read, judged and replaced only while holding
 * it, so at most one process at a time is anywhere between "read the file" and "file
 * replaced"; the other one got EADDRINUSE and refuses without touching the file. A new
 * lock file is created atomically with its content (written to a temp file, then link(2),
 * which fails if the name exists), and a stale one is replaced by rename(2), so a reader
 * never sees an empty or half-written record. On release the file is removed before the
 * socket is closed, so a successor never sees a free socket next to our live record.
 * What is not covered: two processes in different network namespaces (and so different
 * sockets) that take over the same stale file at the same instant can both succeed, since
 * a file has no compare-and-swap; and a directory shared between hosts (NFS) is not
 * protected beyond the record (a record from another boot is stale by definition).
 * Abstract socket names have no permissions: a local user in the same network namespace
 * who binds the name first keeps the holder out (E_LOCKED saying the socket is held);
 * `ss -xlp` shows who holds it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { link, open, readFile, readlink, rename, stat, unlink } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { KilnError, errnoCode } from './errors.js';

/** What the lock file says about its holder. */
export interface LockIdentity {
  pid: number;
  /** /proc/sys/kernel/random/boot_id; null where unknown (not Linux). */
  boot_id: string | null;
  /** Field 22 of /proc/<pid>/stat (clock ticks after boot); null where unknown. */
  start_time: number | null;
  hostname: string;
  /** ISO time the lock was taken. */
  started_at: string;
  /**
   * The holder's pid and network namespaces (`pid:[4026531836]`, from /proc/self/ns); null
   * where unknown. A holder in another pid namespace cannot be looked up by pid here, and
   * one in another network namespace cannot hold our abstract socket: both are taken as
   * alive (refused), never judged by a pid that means another process here.
   */
  pid_ns?: string | null;
  net_ns?: string | null;
}

/** A lock file that was taken over because its holder is gone. */
export interface StaleLock {
  /** The old record: a full identity, `{ pid }` for a bare pid (older kiln), null for unparseable content. */
  holder: Partial<LockIdentity> | null;
  /** The old file's content (at most 200 characters). */
  raw: string;
  /** Why it is stale, e.g. `pid 123 is a zombie`. */
  reason: string;
  /** A line for the log: `took over the stale lock <path> of pid N on host H since T: <reason>`. */
  message: string;
}

export interface HeldLock {
  path: string;
  identity: LockIdentity;
  /** The stale lock this acquisition replaced, or null when there was none. */
  tookOver: StaleLock | null;
  /** true when an abstract socket backs the lock (Linux); false: the lock file only. */
  socket: boolean;
  /** Removes the lock file (only while it still holds our record) and closes the socket. Idempotent. */
  release(): Promise<void>;
}

export interface ProcessLockOptions {
  /** Prefix of the abstract socket's name, e.g. `kiln-coordinator`. */
  name: string;
  /** What the lock protects, for messages: `data dir /var/lib/kiln`. */
  what: string;
  /** Who a live holder is, for messages: `another coordinator is using it`. */
  holderHint?: string;
}

/** The fields of /proc/<pid>/stat the lock needs. */
export interface ProcStat {
  /** R, S, D, T, Z, X, ... */
  state: string;
  /** Field 22: clock ticks after boot. */
  startTime: number;
}

/**
 * Reads /proc/<pid>/stat. `'gone'`: no such process; `'unknown'`: /proc cannot tell
 * (no /proc, or the process exists but is hidden from us).
 */
export async function procStat(pid: number): Promise<ProcStat | 'gone' | 'unknown'> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ESRCH') return pidExists(pid) ? 'unknown' : 'gone';
    return 'unknown';
  }
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const startTime = Number(fields[19]);
  if (!state || !Number.isSafeInteger(startTime)) return 'unknown';
  return { state, startTime };
}

/** This boot's id (/proc/sys/kernel/random/boot_id), or null where there is none. */
export async function bootId(): Promise<string | null> {
  const text = await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => '');
  return text.trim() || null;
}

function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}

async function bootTimeMs(): Promise<number | null> {
  const text = await readFile('/proc/stat', 'utf8').catch(() => '');
  const m = /^btime (\d+)$/m.exec(text);
  return m ? Number(m[1]) * 1000 : null;
}

/** Linux's USER_HZ (the unit of /proc/<pid>/stat times) is 100 on every architecture Node runs on. */
const TICKS_PER_SECOND = 100;
/** Slack for comparing whole-second btime with file mtimes. */
const CLOCK_SLACK_MS = 2000;

async function namespaceOf(kind: 'pid' | 'net'): Promise<string | null> {
  return readlink(`/proc/self/ns/${kind}`).catch(() => null);
}

async function selfIdentity(): Promise<LockIdentity> {
  const st = await procStat(process.pid);
  return {
    pid: process.pid,
    boot_id: await bootId(),
    start_time: typeof st === 'object' ? st.startTime : null,
    hostname: hostname(),
    started_at: new Date().toISOString(),
    pid_ns: await namespaceOf('pid'),
    net_ns: await namespaceOf('net'),
  };
}

type Verdict = { alive: true } | { alive: false; reason: string };

/** Whether the process a record names is provably the one that wrote it and still running. */
async function judgeRecord(rec: Partial<LockIdentity> & { pid: number }, myBoot: string | null): Promise<Verdict> {
  const { pid } = rec;
  if (rec.boot_id && myBoot && rec.boot_id !== myBoot) return { alive: false, reason: `it was taken before the last reboot (boot id ${rec.boot_id})` };
  // Same boot, another pid namespace (another container on this kernel): its pid means nothing
  // here and it may well be running. Refuse; the message says how to take over by hand.
  const myPidNs = await namespaceOf('pid');
  if (rec.pid_ns && myPidNs && rec.pid_ns !== myPidNs) return { alive: true };
  const st = await procStat(pid);
  if (st === 'gone') return { alive: false, reason: `pid ${pid} is not running` };
  if (st === 'unknown') return { alive: true };
  if (st.state === 'Z' || st.state === 'X') return { alive: false, reason: `pid ${pid} has exited (a zombie, not reaped by its parent)` };
  if (typeof rec.start_time === 'number' && rec.start_time !== st.startTime) return { alive: false, reason: `pid ${pid} now belongs to another process (start time ${st.startTime}, the lock's ${rec.start_time})` };
  return { alive: true };
}

/** A bare pid written by an older kiln: the same checks, with the file's mtime standing in for the record. */
async function judgeLegacy(pid: number, path: string): Promise<Verdict> {
  if (pid === process.pid) return { alive: false, reason: `pid ${pid} is this process now (the pid was reused)` };
  const st = await procStat(pid);
  if (st === 'gone') return { alive: false, reason: `pid ${pid} is not running` };
  if (st === 'unknown') return { alive: true };
  if (st.state === 'Z' || st.state === 'X') return { alive: false, reason: `pid ${pid} has exited (a zombie, not reaped by its parent)` };
  const mtime = await stat(path).then(
    (s) => s.mtimeMs,
    () => null,
  );
  const btime = await bootTimeMs();
  if (mtime !== null && btime !== null) {
    if (mtime < btime - CLOCK_SLACK_MS) return { alive: false, reason: `it was written before the last reboot` };
    const startedMs = btime + (st.startTime * 1000) / TICKS_PER_SECOND;
    if (startedMs > mtime + CLOCK_SLACK_MS) return { alive: false, reason: `pid ${pid} started after the lock was written (the pid was reused)` };
  }
  return { alive: true };
}

type Parsed = { kind: 'record'; rec: Partial<LockIdentity> & { pid: number } } | { kind: 'legacy'; pid: number } | { kind: 'garbage' };

function parseLockFile(text: string): Parsed {
  const t = text.trim();
  if (/^\d{1,10}$/.test(t)) {
    const pid = Number(t);
    return pid > 0 ? { kind: 'legacy', pid } : { kind: 'garbage' };
  }
  let v: unknown;
  try {
    v = JSON.parse(t);
  } catch {
    return { kind: 'garbage' };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { kind: 'garbage' };
  const o = v as Record<string, unknown>;
  if (typeof o.pid !== 'number' || !Number.isSafeInteger(o.pid) || o.pid <= 0) return { kind: 'garbage' };
  const str = (x: unknown) => (typeof x === 'string' ? x : undefined);
  return {
    kind: 'record',
    rec: {
      pid: o.pid,
      boot_id: str(o.boot_id) ?? null,
      start_time: typeof o.start_time === 'number' && Number.isSafeInteger(o.start_time) ? o.start_time : null,
      hostname: str(o.hostname),
      started_at: str(o.started_at),
      pid_ns: str(o.pid_ns) ?? null,
      net_ns: str(o.net_ns) ?? null,
    },
  };
}

function describeHolder(h: Partial<LockIdentity>): string {
  return `pid ${h.pid}${h.hostname ? ` on host ${h.hostname}` : ''}${h.started_at ? ` since ${h.started_at}` : ''}`;
}

/** Listens on the abstract socket: the server, 'busy' (EADDRINUSE), or null where abstract sockets do not work. */
function listenAbstract(name: string): Promise<Server | 'busy' | null> {
  if (process.platform !== 'linux') return Promise.resolve(null);
  return new Promise((resolve) => {
    const server = createServer((conn) => conn.destroy());
    server.once('error', (err) => resolve(errnoCode(err) === 'EADDRINUSE' ? 'busy' : null));
    server.listen(`\0${name}`, () => {
      server.unref();
      resolve(server);
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function readLockFile(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw err;
  }
}

/** Creates `path` with `content` only if it does not exist; false when it does. */
async function createExclusive(path: string, tmp: string): Promise<boolean> {
  try {
    await link(tmp, path);
    return true;
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw err;
  }
  // a file system without hard links: O_EXCL create (a crash mid-write leaves a record that reads as stale)
  let fh;
  try {
    fh = await open(path, 'wx', 0o644);
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') return false;
    throw err;
  }
  try {
    await fh.writeFile(await readFile(tmp));
    await fh.sync();
  } finally {
    await fh.close();
  }
  return true;
}

/**
 * Takes the lock `path` for this process (see the module header). Throws
 * `KilnError('E_LOCKED')` naming the holder when a live process holds it.
 */
export async function acquireProcessLock(path: string, opts: ProcessLockOptions): Promise<HeldLock> {
  const dir = dirname(path);
  const hint = opts.holderHint ? `${opts.holderHint}; ` : '';
  const d = await stat(dir);
  const socketName = `${opts.name}-lock-${createHash('sha256').update(`${d.dev}:${d.ino}\0${basename(path)}`).digest('hex')}`;

  const server = await listenAbstract(socketName);
  if (server === 'busy') {
    // another process in this network namespace holds it: refuse, naming the holder the file names if that one is alive
    const text = await readLockFile(path).catch(() => null);
    const parsed = text === null ? null : parseLockFile(text);
    let file = text === null ? 'there is no lock file yet' : `the lock file ${path} names no holder`;
    if (parsed && parsed.kind !== 'garbage') {
      const holder = parsed.kind === 'record' ? parsed.rec : { pid: parsed.pid };
      const verdict = parsed.kind === 'record' ? await judgeRecord(parsed.rec, await bootId()) : await judgeLegacy(parsed.pid, path);
      if (verdict.alive) throw new KilnError('E_LOCKED', `${opts.what} is locked by ${describeHolder(holder)} (${hint}lock file ${path})`);
      file = `the lock file ${path} names ${describeHolder(holder)}, but ${verdict.reason}`;
    }
    throw new KilnError('E_LOCKED', `${opts.what} is locked: another process holds its lock socket @${socketName} (${hint}${file}; \`ss -xlp | grep ${socketName.slice(0, 40)}\` shows it)`);
  }

  let acquired = false;
  try {
    const identity = await selfIdentity();
    const content = `${JSON.stringify(identity)}\n`;
    const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    let tookOver: StaleLock | null = null;
    const fh = await open(tmp, 'wx', 0o644);
    try {
      await fh.writeFile(content);
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      for (let attempt = 0; ; attempt++) {
        if (await createExclusive(path, tmp)) break;
        const text = await readLockFile(path);
        if (text === null) {
          // removed between our create and read (its holder released it): create again
          if (attempt < 10) continue;
          throw new KilnError('E_LOCKED', `could not take the lock ${path}: it keeps appearing and disappearing`);
        }
        const parsed = parseLockFile(text);
        let verdict: Verdict;
        let holder: Partial<LockIdentity> | null;
        if (parsed.kind === 'record') {
          holder = parsed.rec;
          verdict = await judgeRecord(parsed.rec, identity.boot_id);
        } else if (parsed.kind === 'legacy') {
          holder = { pid: parsed.pid };
          verdict = await judgeLegacy(parsed.pid, path);
        } else {
          holder = null;
          verdict = { alive: false, reason: 'its content is not a lock record' };
        }
        if (verdict.alive) {
          const self = holder?.pid === process.pid ? ' (this process)' : '';
          const elsewhere = holder?.pid_ns && identity.pid_ns && holder.pid_ns !== identity.pid_ns ? `; it runs in another pid namespace (${holder.pid_ns}: another container), so it cannot be checked from here: remove the lock file if nothing runs there` : '';
          throw new KilnError('E_LOCKED', `${opts.what} is locked by ${describeHolder(holder!)}${self} (${hint}lock file ${path}${elsewhere})`);
        }
        await rename(tmp, path);
        const raw = text.length > 200 ? `${text.slice(0, 200)}...` : text;
        tookOver = {
          holder,
          raw,
          reason: verdict.reason,
          message: `took over the stale lock ${path}${holder ? ` of ${describeHolder(holder)}` : ''}: ${verdict.reason}`,
        };
        break;
      }
    } finally {
      await unlink(tmp).catch(() => {});
    }
    await fsyncDir(dir);
    acquired = true;

    let released = false;
    const release = async () => {
      if (released) return;
      released = true;
      try {
        // remove the file only while it is still ours (someone may have taken it over)
        const now = await readLockFile(path).catch(() => null);
        if (now === content) {
          await unlink(path).catch(() => {});
          await fsyncDir(dir).catch(() => {});
        }
      } finally {
        if (server) await closeServer(server);
      }
    };
    return { path, identity, tookOver, socket: server !== null, release };
  } finally {
    if (!acquired && server) await closeServer(server);
  }
}
