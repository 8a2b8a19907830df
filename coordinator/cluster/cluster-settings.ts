/**
 * The value types of the coordinator's cluster settings (issue 14), used by its settings
 * table (`config.ts`): `state` (empty, or a PostgreSQL URL, checked and never echoed with its
 * password), `advertise_url` (`http(s)://host[:port]`) and the bounds of `lease_ttl`.
 */
import { z } from 'zod';
import { coerceError, configError, type SettingType } from '../../shared/index.js';
import { parsePostgresUrl } from '../state/pg/pg-url.js';

/** The `state` setting: empty (the embedded state in data_dir) or a PostgreSQL URL (checked, never echoed with its password). */
export const stateType: SettingType<string> = {
  hint: 'postgres-url',
  file: z.string(),
  parse: (setting: string, v: unknown) => {
    if (typeof v !== 'string') throw configError(setting, 'must be text: empty, or postgres://user:password@host:port/database');
    if (v.trim() === '') return '';
    try {
      return parsePostgresUrl(v);
    } catch (err) {
      throw configError(setting, coerceError(err).message);
    }
  },
};

/** The `advertise_url` setting: `http(s)://host[:port]`, no path, query or credentials. */
export const advertiseUrlType: SettingType<string> = {
  hint: 'url',
  file: z.string(),
  parse: (setting: string, v: unknown) => {
    const text = typeof v === 'string' ? v.trim() : '';
    const shape = `'${String(v).slice(0, 200)}' is not http(s)://host[:port] (the URL other coordinators, agents and clients reach this one at)`;
    if (text.length === 0 || text.length > 200) throw configError(setting, text.length > 200 ? `${shape}; at most 200 characters` : shape);
    let u: URL;
    try {
      u = new URL(text);
    } catch {
      throw configError(setting, shape);
    }
    if ((u.protocol !== 'http:' && u.protocol !== 'https:') || !u.hostname) throw configError(setting, shape);
    if ((u.pathname !== '/' && u.pathname !== '') || u.search || u.hash || u.username || u.password) throw configError(setting, `${shape}: no path, query or credentials`);
    return u.origin;
  },
};

/** Bounds of `lease_ttl`. */
export const LEASE_TTL_MIN_MS = 2_000;
export const LEASE_TTL_MAX_MS = 5 * 60_000;
