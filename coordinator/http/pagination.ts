/**
 * Cursor pagination for list routes: `?limit=` (1-500, default 50) and `?cursor=` (the
 * id after which to continue), answered as `{items, next_cursor}` plus an RFC 8288
 * `Link: <...>; rel="next"` header.
 */
import { z } from 'zod';

export const PageQuery = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: z.string().max(200).optional(),
});

export function nextLink(url: string, nextCursor: string | null): Record<string, string> {
  if (!nextCursor) return {};
  const u = new URL(url);
  u.searchParams.set('cursor', nextCursor);
  return { link: `<${u.pathname}${u.search}>; rel="next"` };
}
