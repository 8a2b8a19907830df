/**
 * Cursor pagination for list routes: `?limit=` (1-500, default 50) and `?cursor=` (the
 * id after which to continue), answered as `{items, next_cursor}` plus an RFC 8288
 * `Link: <...>; rel="next"` header.
 */
import { z } from '@hono/zod-openapi';

export const PageQuery = z.object({
  limit: z
    .string()
    .regex(/^[1-9][0-9]{0,2}$/, 'must be an integer from 1 to 500')
    .transform(Number)
    .refine((n) => n <= 500, 'must be an integer from 1 to 500')
    .optional()
    .transform((n) => n ?? 50)
    .openapi({ type: 'integer', minimum: 1, maximum: 500, default: 50, description: 'Items per page' }),
  cursor: z.string().min(1).max(200).optional().openapi({ description: 'next_cursor of the previous page' }),
});

export function nextLink(url: string, nextCursor: string | null): Record<string, string> {
  if (!nextCursor) return {};
  const u = new URL(url);
  u.searchParams.set('cursor', nextCursor);
  return { link: `<${u.pathname}${u.search}>; rel="next"` };
}
