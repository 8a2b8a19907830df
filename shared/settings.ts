/**
 * Settings tables: each process (coordinator, agent) declares its settings once, as rows of
 * a table, and everything else is derived from the rows: the config file's schema, the
 * environment variables read, the command-line flags (with their `--help` text) and the
 * README's settings table. One precedence rule for every row:
 *
 *   default < config file < environment < flag
 *
 * A row is keyed by its id (camelCase); its flag is the id in kebab case (`heartbeatInterval`
 * → `--heartbeat-interval`), so the object commander builds from the flags is keyed by ids.
 * Secrets (`secret: true`) have no flag: a flag is visible to every user in `ps`. Values
 * are parsed only when the process asks for them (`SettingsReader.get`), so a setting that
 * does not apply (the S3 bucket of a local CAS) is never checked.
 */
import { z } from 'zod';
import { configError, durationSetting, intSetting, labelsSetting, listenSetting, sizeSetting, boolSetting } from './config-values.js';
import { LOG_LEVELS } from './logger.js';
import { LABEL_KEY_RE, LABEL_KEY_RULE } from './names.js';

/** Where a setting's value came from, lowest precedence first. */
export const LAYERS = ['default', 'file', 'env', 'flag'] as const;
export type Layer = (typeof LAYERS)[number];

/** How one setting's value is written (in a file, and as text) and parsed. */
export interface SettingType<T> {
  /** Placeholder of the flag's value in `--help`, e.g. `duration`. */
  readonly hint: string;
  /** The value's schema in the config file. */
  readonly file: z.ZodType;
  /** A value from any layer (text from a flag or the environment, or the file's value) to T. Throws E_CONFIG naming `setting`. */
  parse(setting: string, value: unknown): T;
}

export interface SettingRow<T = unknown> {
  readonly type: SettingType<T>;
  /** Dotted key in the config file (`cas.s3.bucket`); also the setting's name in errors and docs. */
  readonly key: string;
  readonly env: string;
  readonly description: string;
  /** The default as it would be written in a file or flag (parsed like one); none when computed by the loader. */
  readonly default?: string | number | boolean;
  /** How a computed default is described (`--help`, README). */
  readonly defaultText?: string;
  /** No flag: the value is a secret (a flag shows in `ps`). */
  readonly secret?: boolean;
  /** For benchmarks: not in `--help` or the README. */
  readonly hidden?: boolean;
}

export type SettingTable = Readonly<Record<string, SettingRow<any>>>;
export type SettingValue<R> = R extends SettingRow<infer T> ? T : never;
export type SettingFlags<Tbl extends SettingTable> = { [K in keyof Tbl]?: string };

function text(hint: string): SettingType<string> {
  return {
    hint,
    file: z.string(),
    parse: (setting, v) => {
      if (typeof v !== 'string') throw configError(setting, `'${String(v)}' is not text`);
      return v;
    },
  };
}

function oneOf<const V extends string>(values: readonly V[], hint = values.join('|')): SettingType<V> {
  const list = values.length === 2 ? `${values[0]} or ${values[1]}` : `one of ${values.join(', ')}`;
  return {
    hint,
    file: z.enum(values as unknown as [V, ...V[]]),
    parse: (setting, v) => {
      if (!(values as readonly unknown[]).includes(v)) throw configError(setting, `'${String(v)}' is not ${list}`);
      return v as V;
    },
  };
}

/** The value types settings are made of. */
export const settingTypes = {
  text,
  oneOf,
  duration: (): SettingType<number> => ({ hint: 'duration', file: z.union([z.string(), z.number().positive()]), parse: (s, v) => durationSetting(s, v as string | number) }),
  int: (min: number, max: number): SettingType<number> => ({ hint: 'n', file: z.number().int(), parse: (s, v) => intSetting(s, v as string | number, min, max) }),
  size: (): SettingType<number> => ({ hint: 'size', file: z.union([z.string(), z.number()]), parse: (s, v) => sizeSetting(s, v as string | number) }),
  bool: (): SettingType<boolean> => ({ hint: 'true|false', file: z.boolean(), parse: (s, v) => boolSetting(s, v as string | boolean) }),
  listen: (): SettingType<{ host: string; port: number }> => ({ hint: 'host:port', file: z.string(), parse: (s, v) => listenSetting(s, String(v)) }),
  /** `a,b,c` as text, a list in the file. */
  list: (hint: string): SettingType<string[]> => ({
    hint,
    file: z.array(z.string()),
    parse: (_s, v) => (Array.isArray(v) ? (v as string[]) : String(v).split(',').map((x) => x.trim()).filter(Boolean)),
  }),
  /** `k=v,k2=v2` as text, a map in the file. */
  labels: (): SettingType<Record<string, string>> => ({
    hint: 'k=v,...',
    file: z.record(z.string().regex(LABEL_KEY_RE, `must be ${LABEL_KEY_RULE}`), z.string()),
    parse: (s, v) => (typeof v === 'string' ? labelsSetting(s, v) : (v as Record<string, string>)),
  }),
};

/** The log settings, rows of both processes' tables. */
export const LOG_SETTINGS = {
  logLevel: { type: oneOf(LOG_LEVELS, 'level'), key: 'log.level', env: 'KILN_LOG_LEVEL', default: 'info', description: `log level: ${LOG_LEVELS.join(', ')}` },
  logFormat: { type: oneOf(['json', 'text']), key: 'log.format', env: 'KILN_LOG_FORMAT', defaultText: 'text on a terminal, else json', description: 'log line format' },
} as const satisfies SettingTable;

/** `heartbeatInterval` → `heartbeat-interval`. */
export function kebab(id: string): string {
  return id.replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`);
}

/** The config file's schema: a strict object per section, every key optional. */
export function fileSchema(table: SettingTable): z.ZodType {
  type Section = Map<string, z.ZodType | Section>;
  const root: Section = new Map();
  for (const row of Object.values(table)) {
    const parts = row.key.split('.');
    let at = root;
    for (const part of parts.slice(0, -1)) {
      let next = at.get(part);
      if (next === undefined) at.set(part, (next = new Map()));
      at = next as Section;
    }
    at.set(parts.at(-1)!, row.type.file);
  }
  const build = (s: Section): z.ZodType => z.strictObject(Object.fromEntries([...s].map(([k, v]) => [k, (v instanceof Map ? build(v) : v).optional()])));
  return build(root);
}

function fileValue(file: unknown, key: string): unknown {
  let at = file;
  for (const part of key.split('.')) {
    if (at === null || typeof at !== 'object' || !Object.hasOwn(at, part)) return undefined;
    at = (at as Record<string, unknown>)[part];
  }
  return at;
}

export interface SettingSources {
  /** Flags, keyed by row id (commander's option object); other keys are ignored. */
  flags: Readonly<Record<string, unknown>>;
  env: Readonly<Record<string, string | undefined>>;
  /** The parsed config file (checked against `fileSchema`), or `{}`. */
  file: unknown;
}

/** A table read against its sources: the winning raw value of each row, parsed on demand. */
export class SettingsReader<Tbl extends SettingTable> {
  constructor(
    readonly table: Tbl,
    private readonly sources: SettingSources,
  ) {}

  /** The winning raw value and its layer; undefined when no layer (not even a default) sets it. */
  pick(id: keyof Tbl & string): { raw: unknown; layer: Layer } | undefined {
    const row = this.table[id]!;
    const flag = row.secret ? undefined : this.sources.flags[id];
    if (flag !== undefined) return { raw: flag, layer: 'flag' };
    const env = this.sources.env[row.env];
    if (env !== undefined) return { raw: env, layer: 'env' };
    const file = fileValue(this.sources.file, row.key);
    if (file !== undefined) return { raw: file, layer: 'file' };
    if (row.default !== undefined) return { raw: row.default, layer: 'default' };
    return undefined;
  }

  /** The parsed value, or undefined when no layer sets it (the loader computes its default). */
  get<K extends keyof Tbl & string>(id: K): SettingValue<Tbl[K]> | undefined {
    const p = this.pick(id);
    return p === undefined ? undefined : (this.table[id]!.type.parse(this.table[id]!.key, p.raw) as SettingValue<Tbl[K]>);
  }

  /** The parsed value of a row that has a default. */
  need<K extends keyof Tbl & string>(id: K): SettingValue<Tbl[K]> {
    const v = this.get(id);
    if (v === undefined) throw configError(this.table[id]!.key, 'has no value');
    return v;
  }

  /** The layer a row's value comes from, as a number (higher wins); -1 when unset. */
  rank(id: keyof Tbl & string): number {
    const p = this.pick(id);
    return p === undefined ? -1 : LAYERS.indexOf(p.layer);
  }
}

/** What commander needs to declare one flag (kept free of commander, which only the CLI loads). */
export interface FlagSpec {
  /** `--heartbeat-interval <duration>` */
  flags: string;
  description: string;
  hidden: boolean;
}

function defaultOf(row: SettingRow): string | undefined {
  return row.defaultText ?? (row.default !== undefined ? String(row.default) : undefined);
}

/** One flag per row that is not a secret, its help text ending with the default, env var and file key. */
export function settingFlags(table: SettingTable): FlagSpec[] {
  return Object.entries(table)
    .filter(([, row]) => !row.secret)
    .map(([id, row]) => {
      const def = defaultOf(row);
      return {
        // a boolean's value is optional: `--insecure` alone is `--insecure true`
        flags: row.type.hint === 'true|false' ? `--${kebab(id)} [true|false]` : `--${kebab(id)} <${row.type.hint}>`,
        description: `${row.description} [${def !== undefined ? `default: ${def}; ` : ''}env ${row.env}; file ${row.key}]`,
        hidden: Boolean(row.hidden),
      };
    });
}

/** The end of a process's `--help`: the precedence rule and the settings that have no flag. */
export function settingsHelpFooter(table: SettingTable): string {
  const lines = ['', 'Every setting: default < config file < environment < flag.'];
  const secrets = Object.values(table).filter((row) => row.secret && !row.hidden);
  if (secrets.length > 0) {
    lines.push('Secrets have no flag (a flag shows in ps):');
    for (const row of secrets) lines.push(`  ${row.key} [env ${row.env}]: ${row.description}`);
  }
  return lines.join('\n');
}

/** The README's table of a process's settings (one line per row that is not hidden). */
export function settingsMarkdown(table: SettingTable): string {
  const cell = (s: string) => s.replaceAll('|', '\\|');
  const lines = ['| File key | Environment | Flag | Default | What |', '|---|---|---|---|---|'];
  for (const [id, row] of Object.entries(table)) {
    if (row.hidden) continue;
    const flag = row.secret ? '(none: a secret)' : `\`--${kebab(id)}\``;
    lines.push(`| \`${row.key}\` | \`${row.env}\` | ${flag} | ${cell(defaultOf(row) ?? '')} | ${cell(row.description)} |`);
  }
  return lines.join('\n');
}
