/**
 * Encoding and validation of protocol frames: msgpackr on the wire, zod at both ends.
 *
 * `decodeFrame` never throws: a frame that is not msgpack, not an envelope, of an unknown
 * type, travelling the wrong way or with an invalid payload comes back as
 * `{ok: false, error}` with a message naming what is wrong, so socket handlers can answer
 * with an `error` frame or close the connection instead of crashing.
 */
// `msgpackr/pack` is msgpackr without its optional native string extractor
// (msgpackr-extract: a native addon, ~7 MiB of RSS in every process that loads it).
// Frames carry short strings (ids, names) and binary log data, which the JS decoder
// reads as fast.
import { Packr } from 'msgpackr/pack';
import { z } from 'zod';
import { MESSAGES, type Frame, type MessageType, type Payload } from './messages.js';
import { coerceError } from '../errors.js';

const packr = new Packr({ useRecords: false, mapsAsObjects: true });

const Envelope = z.strictObject({
  v: z.number().int().positive(),
  type: z.string().max(64),
  id: z.number().int().nonnegative(),
  payload: z.unknown(),
});

export type DecodeResult = { ok: true; frame: Frame } | { ok: false; error: string; id?: number };

/** Formats zod issues as `field: message; field: message`. */
export function formatIssues(error: z.ZodError, prefix = ''): string {
  return error.issues
    .slice(0, 5)
    .map((i) => {
      const path = [prefix, ...i.path.map(String)].filter(Boolean).join('.');
      return path ? `${path}: ${i.message}` : i.message;
    })
    .join('; ');
}

/** Validates and encodes one frame; throws when the payload does not match its schema (a bug in the sender). */
export function encodeFrame<T extends MessageType>(type: T, id: number, payload: Payload<T>, v: number): Buffer {
  const parsed = MESSAGES[type].schema.safeParse(payload);
  if (!parsed.success) throw new Error(`refusing to send invalid ${type} frame: ${formatIssues(parsed.error, 'payload')}`);
  return packr.pack({ v, type, id, payload });
}

/**
 * Decodes and validates one frame received by `side`. Direction is checked: an agent may
 * not send `assign`, a coordinator may not send `hello`.
 */
export function decodeFrame(data: Uint8Array, side: 'coordinator' | 'agent'): DecodeResult {
  let raw: unknown;
  try {
    raw = packr.unpack(data);
  } catch (err) {
    return { ok: false, error: `frame is not valid msgpack: ${coerceError(err).message}` };
  }
  const env = Envelope.safeParse(raw);
  if (!env.success) return { ok: false, error: `invalid envelope: ${formatIssues(env.error)}` };
  const { type, id, v } = env.data;
  const spec = (MESSAGES as Record<string, { schema: z.ZodType; dir: string }>)[type];
  if (!spec) return { ok: false, error: `unknown message type '${type}'`, id };
  const allowed = spec.dir === 'both' || (side === 'coordinator' ? spec.dir === 'to_coordinator' : spec.dir === 'to_agent');
  if (!allowed) return { ok: false, error: `message type '${type}' may not be sent to the ${side}`, id };
  const payload = spec.schema.safeParse(env.data.payload);
  if (!payload.success) return { ok: false, error: `invalid ${type} payload: ${formatIssues(payload.error, 'payload')}`, id };
  return { ok: true, frame: { v, type, id, payload: payload.data } as Frame };
}
