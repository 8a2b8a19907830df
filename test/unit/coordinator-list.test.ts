/**
 * Coordinator lists (issue 14): splitting and comparing them (shared/coordinator-list.ts),
 * the agent's and the CLI's list settings (each entry checked as a single URL is, errors
 * naming the entry, at most 16, duplicates refused, one URL exactly as before), and the
 * agent's choice of the next coordinator (agent/coordinator-ring.ts) step by step.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../agent/config.js';
import { CoordinatorRing } from '../../agent/coordinator-ring.js';
import { loadClientConfig } from '../../cli/client-config.js';
import { coordinatorKey, indexOfCoordinator, MAX_COORDINATORS, splitCoordinatorList } from '../../shared/index.js';

describe('coordinator lists', () => {
  it('splits a list, trims entries and bounds it', () => {
    expect(splitCoordinatorList('http://a:1')).toEqual(['http://a:1']);
    expect(splitCoordinatorList(' http://a:1 , https://b ')).toEqual(['http://a:1', 'https://b']);
    expect(splitCoordinatorList(['http://a:1', 'http://b:2'])).toEqual(['http://a:1', 'http://b:2']);
    expect(() => splitCoordinatorList('http://a:1,,http://b')).toThrow(/entry 2 of 'http:\/\/a:1,,http:\/\/b' is empty/);
    expect(() => splitCoordinatorList('http://a:1,')).toThrow(/entry 2 .* is empty/);
    const many = Array.from({ length: MAX_COORDINATORS + 1 }, (_, i) => `http://c${i}:1`).join(',');
    expect(() => splitCoordinatorList(many)).toThrow(/17 coordinators given; at most 16/);
    expect(splitCoordinatorList(many.split(',').slice(0, 16).join(','))).toHaveLength(16);
    expect(() => splitCoordinatorList(`http://${'x'.repeat(3000)}`)).toThrow(/longer than 2048 characters/);
  });

  it('names one coordinator by one key whatever the URL form', () => {
    for (const form of ['http://C.example:8080', 'ws://c.example:8080/api/v1/agent', 'http://c.example:8080/', 'c.example:8080']) expect(coordinatorKey(form)).toBe('http://c.example:8080');
    expect(coordinatorKey('wss://c.example:443/api/v1/agent')).toBe('https://c.example');
    expect(coordinatorKey('ws://c.example:80')).toBe('http://c.example');
    expect(coordinatorKey('http://[::1]:8080')).toBe('http://[::1]:8080');
    expect(coordinatorKey('https://c.example/kiln/')).toBe('https://c.example/kiln');
    expect(coordinatorKey('http://c.example:8080')).not.toBe(coordinatorKey('https://c.example:8080'));
    expect(coordinatorKey('ftp://c.example')).toBeNull();
    expect(coordinatorKey('http://')).toBeNull();
    const keys = ['http://a:1', 'http://b:2'].map((u) => coordinatorKey(u)!);
    expect(indexOfCoordinator(keys, 'ws://B:2/api/v1/agent')).toBe(1);
    expect(indexOfCoordinator(keys, 'http://c:3')).toBe(-1);
    expect(indexOfCoordinator(keys, null)).toBe(-1);
    expect(indexOfCoordinator(keys, 'not a url at all')).toBe(-1);
  });
});

describe('the agent coordinator setting', () => {
  let dir: string;
  let token: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-coord-list-'));
    token = join(dir, 'token');
    await writeFile(token, 'agent-token\n');
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));
  const host = (env: Record<string, string> = {}) => ({ env: { HOME: dir, ...env }, hostname: 'h', isTTY: false });

  it('one URL: the same config as before lists', () => {
    const c = loadAgentConfig({ coordinator: 'https://c:1', tokenFile: token }, host());
    expect(c).toMatchObject({ wsUrl: 'wss://c:1/api/v1/agent', httpUrl: 'https://c:1' });
    expect(c.coordinators).toEqual([{ wsUrl: 'wss://c:1/api/v1/agent', httpUrl: 'https://c:1' }]);
  });

  it('takes a list from the flag, the environment and the config file (text or a YAML list)', async () => {
    const want = [
      { wsUrl: 'wss://a:1/api/v1/agent', httpUrl: 'https://a:1' },
      { wsUrl: 'ws://127.0.0.1:8080/api/v1/agent', httpUrl: 'http://127.0.0.1:8080' },
    ];
    expect(loadAgentConfig({ coordinator: 'https://a:1, ws://127.0.0.1:8080', tokenFile: token }, host()).coordinators).toEqual(want);
    expect(loadAgentConfig({ tokenFile: token }, host({ KILN_COORDINATOR: 'https://a:1,http://127.0.0.1:8080' })).coordinators).toEqual(want);
    const file = join(dir, 'agent.yaml');
    await writeFile(file, `coordinator: [https://a:1, 'ws://127.0.0.1:8080']\ntoken_file: ${token}\n`);
    const c = loadAgentConfig({ config: file }, host());
    expect(c.coordinators).toEqual(want);
    expect(c.httpUrl).toBe('https://a:1'); // the first one
    await writeFile(file, `coordinator: https://a:1,ws://127.0.0.1:8080\ntoken_file: ${token}\n`);
    expect(loadAgentConfig({ config: file }, host()).coordinators).toEqual(want);
  });

  it('refuses a bad entry naming it, too many, duplicates and plain http to a remote host', () => {
    const load = (coordinator: string, env: Record<string, string> = {}) => () => loadAgentConfig({ coordinator, tokenFile: token }, host(env));
    expect(load('https://a:1,ftp://b')).toThrow(/config coordinator: entry 'ftp:\/\/b': unsupported scheme 'ftp:'/);
    expect(load('https://a:1,http://b c')).toThrow(/entry 'http:\/\/b c': 'http:\/\/b c' is not a URL/);
    expect(load('https://a:1,,https://b:1')).toThrow(/config coordinator: entry 2 .* is empty/);
    expect(load('https://a:1,https://A:1/')).toThrow(/'https:\/\/A:1\/' names the same coordinator as 'https:\/\/a:1'/);
    expect(load('https://a:1,wss://a:1/api/v1/agent')).toThrow(/names the same coordinator/);
    expect(load(Array.from({ length: 17 }, (_, i) => `https://c${i}:1`).join(','))).toThrow(/at most 16/);
    expect(load('https://a:1,http://10.0.0.9:8080')).toThrow(/coordinator entry 'http:\/\/10\.0\.0\.9:8080': plain http:\/\/ to 10\.0\.0\.9:8080 is refused/);
    expect(loadAgentConfig({ coordinator: 'https://a:1,http://10.0.0.9:8080', tokenFile: token, insecure: 'true' }, host()).coordinators).toHaveLength(2);
    expect(load('http://[::1]:8080,http://[::1]:8081')().coordinators.map((c) => c.httpUrl)).toEqual(['http://[::1]:8080', 'http://[::1]:8081']);
    // One bad URL reads as it did before lists.
    expect(load('ftp://b')).toThrow(/^config coordinator: unsupported scheme 'ftp:' in 'ftp:\/\/b'$/);
  });
});

describe('the CLI --coordinator list', () => {
  const env = { HOME: '/nowhere', KILN_TOKEN: 't' };
  it('one URL: as before lists', () => {
    const c = loadClientConfig({ coordinator: 'ws://127.0.0.1:8080/api/v1/agent' }, env);
    expect(c.baseUrl).toBe('http://127.0.0.1:8080');
    expect(c.baseUrls).toEqual(['http://127.0.0.1:8080']);
    expect(loadClientConfig({}, env).baseUrls).toEqual(['http://127.0.0.1:8080']);
  });

  it('takes a list from --coordinator or KILN_COORDINATOR and checks each entry', () => {
    expect(loadClientConfig({ coordinator: 'https://a:1,wss://b:2' }, env).baseUrls).toEqual(['https://a:1', 'https://b:2']);
    expect(loadClientConfig({}, { ...env, KILN_COORDINATOR: 'http://127.0.0.1:1, http://[::1]:2' }).baseUrls).toEqual(['http://127.0.0.1:1', 'http://[::1]:2']);
    expect(() => loadClientConfig({ coordinator: 'https://a:1,ftp://b' }, env)).toThrow(/--coordinator entry 'ftp:\/\/b': unsupported scheme ftp:/);
    expect(() => loadClientConfig({ coordinator: 'https://a:1,http://10.0.0.9:1' }, env)).toThrow(/--coordinator entry 'http:\/\/10\.0\.0\.9:1': plain http:\/\/ to 10\.0\.0\.9:1 is refused/);
    expect(() => loadClientConfig({ coordinator: 'https://a:1,https://a:1/' }, env)).toThrow(/names the same coordinator as 'https:\/\/a:1'/);
    expect(() => loadClientConfig({ coordinator: 'https://a:1,' }, env)).toThrow(/--coordinator: entry 2 .* is empty/);
    expect(() => loadClientConfig({ coordinator: Array.from({ length: 17 }, (_, i) => `https://c${i}:1`).join(',') }, env)).toThrow(/--coordinator: 17 coordinators given; at most 16/);
  });
});

describe('the agent choosing the next coordinator', () => {
  const ep = (name: string) => ({ wsUrl: `ws://${name}:1/api/v1/agent`, httpUrl: `http://${name}:1` });
  const names = (r: CoordinatorRing) => r.current.httpUrl;

  it('one coordinator: the same one after every end, always with the backoff (as before lists)', () => {
    const r = new CoordinatorRing([ep('a')]);
    for (const end of [{}, { leader: 'http://b:1' }, { leader: null }, { leader: 'http://a:1' }]) {
      expect(r.next(end)).toMatchObject({ endpoint: ep('a'), backoff: true });
    }
    r.welcomed();
    expect(r.next({})).toMatchObject({ endpoint: ep('a'), backoff: true });
  });

  it('moves to the next one on failures and backs off once the whole list failed in a row', () => {
    const r = new CoordinatorRing([ep('a'), ep('b'), ep('c')]);
    expect(names(r)).toBe('http://a:1');
    expect(r.next({})).toMatchObject({ endpoint: ep('b'), backoff: false });
    expect(r.next({})).toMatchObject({ endpoint: ep('c'), backoff: false });
    expect(r.next({})).toMatchObject({ endpoint: ep('a'), backoff: true, why: 'the connection to http://c:1 ended', election: false });
    expect(r.next({})).toMatchObject({ endpoint: ep('b'), backoff: false });
    r.welcomed(); // b welcomed the agent, then dropped it: a new round
    expect(r.next({})).toMatchObject({ endpoint: ep('c'), backoff: false });
    expect(r.next({})).toMatchObject({ endpoint: ep('a'), backoff: false });
    expect(r.next({})).toMatchObject({ endpoint: ep('b'), backoff: true });
  });

  it('follows a NOT_LEADER close to a listed leader at once, not to an unlisted or unknown one', () => {
    const r = new CoordinatorRing([ep('a'), ep('b'), ep('c')]);
    expect(r.next({ leader: 'http://C:1/' })).toMatchObject({ endpoint: ep('c'), backoff: false, why: 'http://a:1 is not the leader; it names http://C:1/' });
    r.welcomed();
    expect(r.next({ leader: 'http://elsewhere:1' })).toMatchObject({ endpoint: ep('a'), backoff: false });
    expect(r.next({}).why).toBe('the connection to http://a:1 ended');
    const r2 = new CoordinatorRing([ep('a'), ep('b')]);
    const step = r2.next({ leader: 'http://elsewhere:1' });
    expect(step.endpoint).toEqual(ep('b'));
    expect(step.why).toMatch(/the leader it names \(http:\/\/elsewhere:1\) is not in the coordinator list/);
    expect(r2.next({ leader: null })).toMatchObject({ endpoint: ep('a'), backoff: true, why: 'http://b:1 is not the leader and knows none yet', election: true });
  });

  it('says an election is under way once a standby answered in the round (the agent then waits at most a second), until a welcome', () => {
    const r = new CoordinatorRing([ep('a'), ep('b')]);
    // a (the old leader) is gone; b is a standby that knows no leader yet
    expect(r.next({})).toMatchObject({ endpoint: ep('b'), election: false });
    expect(r.next({ leader: null })).toMatchObject({ endpoint: ep('a'), backoff: true, election: true });
    expect(r.next({})).toMatchObject({ endpoint: ep('b'), backoff: false, election: true });
    expect(r.next({})).toMatchObject({ endpoint: ep('a'), backoff: true, election: true });
    r.welcomed();
    expect(r.next({})).toMatchObject({ endpoint: ep('b'), election: false });
    expect(r.next({})).toMatchObject({ endpoint: ep('a'), backoff: true, election: false });
  });

  it('two standbys naming each other cannot make a loop without backoff', () => {
    const r = new CoordinatorRing([ep('a'), ep('b')]);
    let backoffs = 0;
    for (let i = 0; i < 20; i++) {
      const other = r.current.httpUrl === 'http://a:1' ? 'http://b:1' : 'http://a:1';
      if (r.next({ leader: other }).backoff) backoffs++;
    }
    expect(backoffs).toBeGreaterThanOrEqual(8);
  });
});
