/**
 * Issue 14's coordinator settings (state, advertise_url, lease_ttl) from every layer, with
 * the values checked and the PostgreSQL password never in an error; and `kiln cluster`'s text
 * (cli/cluster-commands.ts) for a leader, an election and no coordinator seen.
 */
import { describe, expect, it } from 'vitest';
import { loadCoordinatorConfig } from '../../coordinator/config.js';
import { clusterText } from '../../cli/cluster-commands.js';
import { coerceError } from '../../shared/index.js';

const host = (env: Record<string, string> = {}) => ({ env: { HOME: '/nowhere', ...env }, arch: 'x64', isTTY: false });
const load = (flags: Record<string, unknown>, env: Record<string, string> = {}) => loadCoordinatorConfig(flags, host(env));

describe('state, advertise_url and lease_ttl', () => {
  it('defaults: the embedded state, the listen address advertised, a 10 s lease', () => {
    const c = load({});
    expect(c.state).toEqual({ kind: 'embedded' });
    expect(c.advertiseUrl).toBeNull();
    expect(c.leaseTtlMs).toBe(10_000);
  });

  it('a PostgreSQL state from the environment or a flag, its location redacted', () => {
    const c = load({}, { KILN_STATE: 'postgresql://kiln:pw1@db.example:5433/kiln?sslmode=require' });
    expect(c.state).toEqual({ kind: 'postgres', url: 'postgresql://kiln:pw1@db.example:5433/kiln?sslmode=require', location: 'postgresql://kiln:***@db.example:5433/kiln?sslmode=require' });
    expect(load({ state: 'postgres://h/k' }, { KILN_STATE: 'postgres://other/k' }).state).toMatchObject({ url: 'postgres://h/k' });
    expect(load({ state: '' }, { KILN_STATE: 'postgres://other/k' }).state).toEqual({ kind: 'embedded' });
  });

  it('refuses a bad state URL naming the setting, never the password', () => {
    for (const bad of ['mysql://u:sekret@h/db', 'postgres://u:sekret@h/db?foo=1', 'postgres://u:sekret@h/a/b']) {
      let message = '';
      try {
        load({ state: bad });
      } catch (err) {
        message = coerceError(err).message;
      }
      expect(message, bad).toMatch(/^config state: /);
      expect(message, bad).not.toContain('sekret');
    }
  });

  it('advertise_url: an origin, normalised; a path, a query or another scheme refused', () => {
    expect(load({ advertiseUrl: 'http://10.0.0.5:8080/' }).advertiseUrl).toBe('http://10.0.0.5:8080');
    expect(load({}, { KILN_ADVERTISE_URL: 'https://Kiln.Example' }).advertiseUrl).toBe('https://kiln.example');
    expect(() => load({ advertiseUrl: 'ws://h:1' })).toThrow(/config advertise_url: 'ws:\/\/h:1' is not http\(s\):\/\/host\[:port\]/);
    expect(() => load({ advertiseUrl: 'http://h/x' })).toThrow(/advertise_url: .*no path, query or credentials/);
    expect(() => load({ advertiseUrl: 'http://u:p@h' })).toThrow(/advertise_url: .*no path, query or credentials/);
    expect(() => load({ advertiseUrl: `http://${'h'.repeat(300)}` })).toThrow(/at most 200 characters/);
  });

  it('lease_ttl is a duration between 2s and 5m', () => {
    expect(load({ leaseTtl: '2s' }).leaseTtlMs).toBe(2000);
    expect(load({}, { KILN_LEASE_TTL: '5m' }).leaseTtlMs).toBe(300_000);
    expect(() => load({ leaseTtl: '1999ms' })).toThrow(/config lease_ttl: must be between 2s and 5m/);
    expect(() => load({ leaseTtl: '6m' })).toThrow(/config lease_ttl: must be between 2s and 5m/);
    expect(() => load({ leaseTtl: 'soon' })).toThrow(/lease_ttl/);
  });
});

describe('kiln cluster text', () => {
  const now = Date.parse('2026-12-05T12:00:00Z');
  it('prints the leader, the epoch and a table', () => {
    const text = clusterText(
      {
        leader: 'http://a:8080',
        epoch: 7,
        coordinators: [
          { url: 'http://a:8080', role: 'leader', last_seen: '2026-12-05T11:59:58Z' },
          { url: 'http://b:8080', role: 'standby', last_seen: '2026-12-05T11:59:59.500Z' },
        ],
      },
      now,
    );
    const lines = text.split('\n');
    expect(lines.slice(0, 2)).toEqual(['leader: http://a:8080', 'epoch:  7']);
    expect(lines[3]).toMatch(/^COORDINATOR\s+ROLE\s+LAST-SEEN$/);
    expect(lines[4]).toMatch(/^http:\/\/a:8080\s+leader\s+2(\.0)?s ago$/);
    expect(lines[5]).toMatch(/^http:\/\/b:8080\s+standby\s+\S+ ago$/);
  });

  it('says so during an election and when nobody was seen', () => {
    expect(clusterText({ leader: null, epoch: 3, coordinators: [] }, now)).toBe('leader: none (no coordinator holds the lease: an election is under way)\nepoch:  3\nno coordinator has been seen recently\n');
  });
});
