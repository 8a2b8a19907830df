/**
 * Parsers for config values that arrive as text (env vars, flags, YAML scalars), each
 * throwing E_CONFIG with a message that names the setting and the bad value; the config
 * file reader; and EX_CONFIG, the exit status of a process stopped by such an error.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type * as Yaml from 'yaml';
import type { z } from 'zod';
import { formatIssues } from './protocol/codec.js';
import { KilnError, coerceError, errnoCode } from './errors.js';
import { forbiddenContent } from './spec/spec-fields.js';
import { parseDuration } from './duration.js';
import { LABEL_KEY_RE, LABEL_KEY_RULE } from './names.js';

/**
 * Exit status (sysexits.h EX_CONFIG) of a coordinator or agent stopped by an error a restart
 * cannot fix: bad config or token, corrupt state, a data dir another coordinator holds,
 * an incompatible coordinator. systemd's `RestartPreventExitStatus=78` keys on it.
 */
export const EX_CONFIG = 78;

export function configError(setting: string, message: string): KilnError {
  return new KilnError('E_CONFIG', `config ${setting}: ${message}`);
}

export function durationSetting(setting: string, value: string | number): number {
  const ms = typeof value === 'number' ? Math.round(value * 1000) : parseDuration(value);
  if (ms === null || ms <= 0) throw configError(setting, `invalid duration '${value}' (use e.g. 500ms, 10s, 5m)`);
  return ms;
}

export function intSetting(setting: string, value: string | number, min: number, max: number): number {
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw configError(setting, `'${value}' is not an integer in ${min}..${max}`);
  return n;
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4 };

/** A byte size: a number of bytes, or text like `512MiB`, `20GiB`, `10G`. */
export function sizeSetting(setting: string, value: string | number): number {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) throw configError(setting, `'${value}' is not a byte size`);
    return value;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw configError(setting, `'${value}' is not a byte size (use e.g. 512MiB, 20GiB, 1000000)`);
  return Math.round(Number(m[1]) * unit);
}

export function boolSetting(setting: string, value: string | boolean): boolean {
  if (typeof value === 'boolean') return value;
  if (/^(1|true|yes|on)$/i.test(value)) return true;
  if (/^(0|false|no|off)$/i.test(value)) return false;
  throw configError(setting, `'${value}' is not a boolean (true/false)`);
}

export function listenSetting(setting: string, value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value.trim());
  if (!m) throw configError(setting, `'${value}' is not host:port (e.g. 127.0.0.1:8080, or :8080 for all interfaces)`);
  const port = Number(m[3]);
  if (port > 65535) throw configError(setting, `port ${port} is out of range`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

/** `k=v,k2=v2` (flags, env) to a map. */
export function labelsSetting(setting: string, value: string): Record<string, string> {
  const out = new Map<string, string>();
  for (const part of value.split(',').map((s) => s.trim()).filter(Boolean)) {
    const i = part.indexOf('=');
    if (i <= 0) throw configError(setting, `'${part}' is not key=value`);
    const key = part.slice(0, i).trim();
    if (!LABEL_KEY_RE.test(key)) throw configError(setting, `label key '${key}' is not valid (use ${LABEL_KEY_RULE})`);
    out.set(key, part.slice(i + 1).trim());
  }
  return Object.fromEntries(out);
}

/**
 * The YAML parser, loaded by the first config file read (72 modules, ~8 MiB of an idle
 * process that takes its settings from flags or the environment). Synchronous, as
 * config loading is: yaml ships a CommonJS build.
 */
let yaml: typeof Yaml | undefined;
function parseYaml(text: string): unknown {
  yaml ??= createRequire(import.meta.url)('yaml') as typeof Yaml;
  return yaml.parse(text, { maxAliasCount: 100 });
}

/** Largest config file read (a config is a few hundred bytes). */
const MAX_CONFIG_CHARS = 1024 * 1024;

/** Reads and validates a YAML/JSON config file; unknown keys are errors naming the key. */
export function readConfigFile<T extends z.ZodType>(path: string, schema: T, readFile: (p: string) => string = (p) => readFileSync(p, 'utf8')): z.infer<T> {
  let text: string;
  try {
    text = readFile(path);
  } catch (err) {
    throw new KilnError('E_CONFIG', `config file ${path} cannot be read (${errnoCode(err) ?? coerceError(err).message})`, { cause: err });
  }
  if (text.length > MAX_CONFIG_CHARS) throw new KilnError('E_CONFIG', `config file ${path} is larger than ${MAX_CONFIG_CHARS} characters`);
  let raw: unknown;
  try {
    raw = parseYaml(text) ?? {};
  } catch (err) {
    throw new KilnError('E_CONFIG', `config file ${path} is not valid YAML: ${coerceError(err).message.split('\n')[0]}`);
  }
  const forbidden = forbiddenContent(raw, 5);
  if (forbidden.length > 0) throw new KilnError('E_CONFIG', `config file ${path}: ${forbidden.map((f) => f.message).join('; ')}`);
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => (i.code === 'unrecognized_keys' ? `${[...i.path, ...i.keys].join('.')}: unknown setting` : `${i.path.join('.')}: ${i.message}`));
    throw new KilnError('E_CONFIG', `config file ${path}: ${issues.slice(0, 5).join('; ') || formatIssues(parsed.error)}`);
  }
  return parsed.data;
}
