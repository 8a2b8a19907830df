/**
 * HTTP API shapes of webhooks (issue 13): what `GET /api/v1/webhooks` and
 * `GET /api/v1/webhooks/{id}/deliveries` answer. A hook shows its target as
 * scheme://host[:port] only (a path or query often holds a token) and never a secret.
 * Shared by the coordinator (serves them, OpenAPI) and the CLI (parses them).
 */
import { z } from 'zod';
import { BUILD_STATES, NODE_STATES } from './states.js';
import { WEBHOOK_EVENT_TYPES } from './spec/notify-spec.js';

/** A coordinator hook's id is its configured name; a build's hook is `<build id>:<n>` (n from 1, in spec order). */
export const WEBHOOK_ID_RE = /^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,62}|b-[0-9a-z]{13,16}-[0-9a-z]{8}:[1-9][0-9]{0,2})$/;
export const WEBHOOK_ID_RULE = "a coordinator hook's name, or <build id>:<n> for a build's own hook";

export const DeliveryView = z.object({
  /** The delivery id (`X-Kiln-Delivery`, the body's `id`): the same on every attempt. */
  delivery: z.string(),
  event: z.enum(WEBHOOK_EVENT_TYPES),
  build: z.string(),
  node: z.string().nullable(),
  /** The build's or node's state the event reports. */
  state: z.string(),
  /** 1 for the first attempt. */
  attempt: z.number().int(),
  at: z.string().describe('ISO 8601 timestamp: when the attempt started'),
  /** The response status; null when there was none (error). */
  status: z.number().int().nullable(),
  /** Why there was no response (connect, timeout, ...), or why it was not sent. */
  error: z.string().nullable(),
  duration_ms: z.number().int(),
  /** The first 256 bytes of the response body (a build's own hook: shown to admin keys only, else empty). */
  response: z.string(),
  /** delivered; retrying (another attempt follows); failed (no more attempts, or a status not retried). */
  outcome: z.enum(['delivered', 'retrying', 'failed']),
});

export const WebhookView = z.object({
  id: z.string(),
  /** coordinator: configured on the coordinator (every build); build: named in one build's spec. */
  scope: z.enum(['coordinator', 'build']),
  /** The configured name (coordinator hooks), else null. */
  name: z.string().nullable(),
  /** The build (build hooks), else null. */
  build: z.string().nullable(),
  /** scheme://host[:port] of the URL (the path and query are not shown). */
  target: z.string(),
  events: z.array(z.enum(WEBHOOK_EVENT_TYPES)),
  build_states: z.array(z.enum(BUILD_STATES)).nullable(),
  node_states: z.array(z.enum(NODE_STATES)).nullable(),
  /** Bodies are signed (X-Kiln-Signature-256). */
  signed: z.boolean(),
  /** Events waiting, and deliveries in flight (retries included). */
  queued: z.number().int(),
  in_flight: z.number().int(),
  delivered: z.number().int(),
  failed: z.number().int(),
  /** Events dropped because the hook's queue was full. */
  dropped: z.number().int(),
  /** Attempts followed by another. */
  retried: z.number().int(),
  /** The latest attempt, or null. */
  last: DeliveryView.nullable(),
});

export const WebhookList = z.object({ items: z.array(WebhookView) });
export const DeliveryList = z.object({ hook: WebhookView, items: z.array(DeliveryView) });
export type DeliveryViewT = z.infer<typeof DeliveryView>;
export type WebhookViewT = z.infer<typeof WebhookView>;
export type WebhookListT = z.infer<typeof WebhookList>;
export type DeliveryListT = z.infer<typeof DeliveryList>;
