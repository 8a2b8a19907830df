/**
 * Telling the agent's trouble from a build's: real connection errors from dockerode
 * (a missing socket, a socket nobody listens on, a server that hangs up, a 5xx) count as
 * the engine being unreachable or broken; a 4xx does not; ENOSPC is a full disk however
 * deeply it is wrapped; an ENOENT from the agent's own files is not an engine problem.
 */
import { createServer as createNetServer, type Server } from 'node:net';
import { createServer } from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiskFullError, diskFullNeed, isDiskFull, isEngineClientError, isEngineServerError, isEngineUnreachable } from '../../agent/failure-kinds.js';
import { KilnError } from '../../shared/index.js';

const caught = (p: Promise<unknown>) => p.then(() => null, (e: unknown) => e);

describe('failure kinds', () => {
  let dir: string;
  const servers: Server[] = [];
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-fk-'));
  });
  afterAll(async () => {
    for (const s of servers) s.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('a missing engine socket is unreachable (connect ENOENT)', async () => {
    const err = await caught(new Docker({ socketPath: join(dir, 'no-such.sock') }).ping());
    expect(isEngineUnreachable(err)).toBe(true);
    expect(isDiskFull(err)).toBe(false);
  });

  it('a server that hangs up mid-request is unreachable (socket hang up)', async () => {
    const path = join(dir, 'hangup.sock');
    const s = createNetServer((c) => c.destroy());
    servers.push(s);
    s.listen(path);
    await once(s, 'listening');
    const err = await caught(new Docker({ socketPath: path }).version());
    expect(isEngineUnreachable(err)).toBe(true);
  });

  it('a 5xx is a server error, a 4xx a refused request, neither is unreachable', async () => {
    const path = join(dir, 'http.sock');
    const s = createServer((req, res) => {
      const status = req.url?.includes('_ping') ? 500 : 404;
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ message: `status ${status}` }));
    });
    servers.push(s as unknown as Server);
    s.listen(path);
    await once(s, 'listening');
    const d = new Docker({ socketPath: path });
    const e500 = await caught(d.ping());
    expect(isEngineServerError(e500)).toBe(true);
    expect(isEngineClientError(e500)).toBe(false);
    expect(isEngineUnreachable(e500)).toBe(false);
    const e404 = await caught(d.getImage('nope').inspect());
    expect(isEngineClientError(e404)).toBe(true);
    expect(isEngineServerError(e404)).toBe(false);
    expect(isEngineUnreachable(e404)).toBe(false);
  });

  it('ENOENT of the agent’s own file is not an engine problem', async () => {
    const err = await caught(readFile(join(dir, 'missing')));
    expect(isEngineUnreachable(err)).toBe(false);
  });

  it('ENOSPC is a full disk, also wrapped in KilnErrors; DiskFullError carries the bytes wanted', () => {
    const enospc = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', syscall: 'write' });
    const wrapped = new KilnError('E_CONNECTION', 'fetching broke', { cause: new KilnError('E_INTERNAL', 'inner', { cause: enospc }) });
    expect(isDiskFull(wrapped)).toBe(true);
    expect(diskFullNeed(wrapped)).toBeNull();
    const typed = new KilnError('E_INTERNAL', 'preparing inputs failed', { cause: new DiskFullError('fetching x failed', 4096, enospc) });
    expect(isDiskFull(typed)).toBe(true);
    expect(diskFullNeed(typed)).toBe(4096);
    expect(isDiskFull(new Error('failed to copy: write /var/lib/docker/tmp/x: no space left on device'))).toBe(true);
    expect(isDiskFull(new Error('exit code: 1'))).toBe(false);
  });
});
