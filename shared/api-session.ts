/**
 * HTTP API shapes of the dashboard's session (`/api/v1/session`): sign in with an API key
 * (the coordinator answers with an HttpOnly cookie), who the session is, sign out. The key
 * travels only in the body of the sign-in; nothing here ever carries it back.
 */
import { z } from 'zod';
import { KeyScope } from './api-access.js';

/** Name of the session cookie. */
export const SESSION_COOKIE = 'kiln_session';
/** Largest sign-in body accepted (bytes). */
export const SESSION_BODY_MAX_BYTES = 4 * 1024;

export const SessionBody = z.strictObject({
  key: z.string().min(1, 'must be an API key (kiln_key_…) or the API token').max(1024, 'must be at most 1024 characters').describe('An API key (kiln_key_…) or the legacy API token'),
});
export type SessionBodyT = z.infer<typeof SessionBody>;

export const SessionView = z.object({
  key_id: z.string(),
  name: z.string(),
  scopes: z.array(KeyScope),
  /** When the session ends (the earlier of its own lifetime and its key's expiry); null for a bearer key that never expires. */
  expires_at: z.string().nullable().describe('ISO 8601 timestamp'),
});
export type SessionViewT = z.infer<typeof SessionView>;
