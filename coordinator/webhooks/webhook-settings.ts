/**
 * The coordinator's webhook settings (rows of `COORDINATOR_SETTINGS`, config.ts): the
 * coordinator's own hooks (`webhooks.hooks`: a list in the config file, the same list as
 * JSON in `--webhooks` / `KILN_WEBHOOKS`), the hosts per-build hooks may call
 * (`webhooks.allowed_hosts`), and the delivery limits. Pure parsing and checks; small,
 * because config.ts loads it at every start (the delivery code is loaded only when a hook
 * can exist: coordinator/webhooks/webhooks.ts).
 */
import { z } from 'zod';
import { coerceError, configError, NAME_RE, NAME_RULE, WebhookFilterFields, resolveFilter, webhookUrlProblem, type SettingType, type WebhookFilter } from '../../shared/index.js';

/** Hooks a coordinator config may list. */
export const MAX_COORDINATOR_HOOKS = 32;

/** One of the coordinator's own hooks, validated. */
export interface CoordinatorHookConfig extends WebhookFilter {
  /** Its id in the API and the metrics. */
  name: string;
  url: string;
  /** File holding the signing secret (absolute; read at start, must not be readable by group or others); null: unsigned. */
  secretFile: string | null;
}

export interface WebhookSettings {
  hooks: CoordinatorHookConfig[];
  /** Hosts per-build hooks may call (empty: per-build hooks are refused at submit). */
  allowedHosts: string[];
  /** Time limit of one attempt (ms). */
  timeoutMs: number;
  /** Attempts per delivery. */
  maxAttempts: number;
  /** First backoff delay ceiling (ms); doubles per attempt up to 5 minutes, full jitter. */
  backoffBaseMs: number;
  /** Events waiting per hook; when full, the oldest is dropped. */
  queueLimit: number;
}

const HookSchema = z.strictObject({
  name: z.string().regex(NAME_RE, `must be ${NAME_RULE}`),
  url: z.string().min(1),
  ...WebhookFilterFields,
  secret_file: z.string().min(1).optional(),
});

function issueText(issue: z.core.$ZodIssue): string {
  if (issue.code === 'unrecognized_keys') return `unknown field ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
  const path = issue.path.map(String).join('.');
  return path ? `field '${path}': ${issue.message}` : issue.message;
}

/** `webhooks.hooks`: a list of {name, url, events?, build_states?, node_states?, secret_file?} (JSON text from a flag or the environment). */
export const webhooksSettingType: SettingType<CoordinatorHookConfig[]> = {
  hint: 'json',
  file: z.array(z.unknown()),
  parse: (setting: string, v: unknown) => {
    let list: unknown = v;
    if (typeof v === 'string') {
      if (v.trim() === '') return [];
      try {
        list = JSON.parse(v);
      } catch (err) {
        throw configError(setting, `is not JSON (${coerceError(err).message}); write a list, e.g. [{"name":"ops","url":"https://ops.example/kiln","events":["build"],"secret_file":"/etc/kiln/ops.secret"}]`);
      }
    }
    if (!Array.isArray(list)) throw configError(setting, 'must be a list of hooks');
    if (list.length > MAX_COORDINATOR_HOOKS) throw configError(setting, `too many hooks (${list.length}; at most ${MAX_COORDINATOR_HOOKS})`);
    const names = new Set<string>();
    return list.map((raw, i) => {
      const r = HookSchema.safeParse(raw);
      const label = `hook ${i + 1}${typeof (raw as { name?: unknown } | null)?.name === 'string' ? ` (${String((raw as { name: string }).name).slice(0, 63)})` : ''}`;
      if (!r.success) throw configError(setting, `${label}: ${issueText(r.error.issues[0]!)}`);
      const h = r.data;
      const problem = webhookUrlProblem(h.url);
      if (problem) throw configError(setting, `${label}: field 'url': ${problem}`);
      if (names.has(h.name)) throw configError(setting, `${label}: the name '${h.name}' is used twice`);
      names.add(h.name);
      return { name: h.name, url: h.url, ...resolveFilter(h), secretFile: h.secret_file ?? null };
    });
  },
};

const HOST_ENTRY_RE = /^(?:\*|(?:\*\.)?[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?|\[?[0-9a-f:.]+\]?)$/;

/** `webhooks.allowed_hosts`: host names, addresses, `*.domain` or `*` (`a,b` as text, a list in the file). */
export const allowedHostsSettingType: SettingType<string[]> = {
  hint: 'host,...',
  file: z.array(z.string()),
  parse: (setting: string, v: unknown) => {
    const list = (Array.isArray(v) ? (v as unknown[]).map(String) : String(v).split(',')).map((x) => x.trim().toLowerCase()).filter(Boolean);
    if (list.length > 256) throw configError(setting, `too many hosts (${list.length}; at most 256)`);
    for (const h of list) {
      if (!HOST_ENTRY_RE.test(h)) throw configError(setting, `'${h.slice(0, 100)}' is not a host name, an address, *.domain or * (no scheme, port or path)`);
    }
    return list;
  },
};
