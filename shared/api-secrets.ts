/**
 * HTTP API shapes of build secrets (issue 12): what `GET /api/v1/secrets` and
 * `PUT /api/v1/secrets/{name}` answer. Names, sizes, versions and times; never a value.
 * Shared by the coordinator (serves them, OpenAPI) and the CLI (parses them).
 */
import { z } from 'zod';

export const SecretView = z.object({
  name: z.string(),
  /** Bytes of the value. */
  size: z.number().int(),
  /** Bumped by every set (never reused); part of the reuse key of nodes naming the secret. */
  version: z.number().int(),
  updated_at: z.string().describe('ISO 8601 timestamp'),
});
export const SecretList = z.object({ items: z.array(SecretView) });
export type SecretViewT = z.infer<typeof SecretView>;
