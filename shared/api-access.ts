/**
 * HTTP API shapes of access control: API keys (create, list, revoke) and the audit log.
 * Shared by the coordinator (serves them, OpenAPI) and the CLI (parses them). A key's
 * secret appears once, in the answer to its creation; nothing else ever carries it.
 */
import { z } from 'zod';
import { NAME_RE, NAME_RULE } from './names.js';

const Time = z.string().describe('ISO 8601 timestamp');

/** The scopes of an API key (coordinator/access/route-scopes.ts says what each grants). */
export const KEY_SCOPES = ['read', 'submit', 'cancel', 'admin'] as const;
export const KeyScope = z.enum(KEY_SCOPES);

export const KeyView = z.object({
  id: z.string(),
  name: z.string(),
  scopes: z.array(KeyScope),
  state: z.enum(['active', 'expired', 'revoked']),
  created_at: Time,
  created_by: z.string().describe('who created it (audit actor form)'),
  expires_at: Time.nullable(),
  revoked_at: Time.nullable(),
  legacy: z.boolean().describe('the legacy API token (data_dir/tokens/api): an admin key revoked by replacing its file'),
});
export type KeyViewT = z.infer<typeof KeyView>;

export const KeyList = z.object({ items: z.array(KeyView) });

export const CreateKeyBody = z
  .object({
    scopes: z.array(KeyScope).min(1).max(KEY_SCOPES.length),
    name: z.string().regex(NAME_RE, `must be a key name (${NAME_RULE})`).optional(),
    expires_in_s: z.number().int().min(1).max(3650 * 86_400).optional().describe('lifetime in seconds; none: never expires'),
  })
  .strict();
export type CreateKeyBodyT = z.infer<typeof CreateKeyBody>;

export const CreatedKey = z.object({
  key: KeyView,
  secret: z.string().describe('the key (kiln_key_…): shown only here, stored only as its sha256'),
});

export const AuditEntryView = z.object({
  time: Time,
  actor: z.string().describe('key:<id>[/<name>], agent[:<name>] or anonymous'),
  action: z.string().describe('build.submit, build.cancel, node.retry, key.create, …; or METHOD /route for a refused call'),
  target: z.string().optional(),
  outcome: z.enum(['ok', 'refused']),
  detail: z.string().optional(),
  remote: z.string().optional(),
});
export type AuditEntryViewT = z.infer<typeof AuditEntryView>;

export const AuditList = z.object({ items: z.array(AuditEntryView) });
