/**
 * The data of one Server-Sent Event as JSON checked against its zod schema: what both the
 * log streams (log-events.ts) and the events stream (api-events.ts) do with a message
 * before a client uses it. The error says what is malformed and where.
 */
import type { z } from 'zod';

export function parseSseJson<S extends z.ZodType>(schema: S, event: string, data: string): { ok: true; data: z.infer<S> } | { ok: false; error: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(data);
  } catch {
    return { ok: false, error: `a '${event}' event whose data is not JSON` };
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    const at = issue && issue.path.length > 0 ? ` at ${issue.path.join('.')}` : '';
    return { ok: false, error: `a malformed '${event}' event (${issue?.message ?? 'invalid'}${at})` };
  }
  return { ok: true, data: r.data };
}
