/**
 * Webhook signatures: `X-Kiln-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`,
 * keyed with the hook's secret (the bytes of its secret file or build secret). A receiver
 * computes the same over the bytes it received, before parsing them, and compares the two
 * in constant time (`verifySignature`; the README shows it).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'x-kiln-signature-256';
const PREFIX = 'sha256=';

/** The header value for `body` signed with `secret`. */
export function signBody(body: string | Uint8Array, secret: string | Uint8Array): string {
  return PREFIX + createHmac('sha256', secret).update(body).digest('hex');
}

/** true when `header` is the signature of `body` with `secret` (constant-time compare; false for a missing or malformed header). */
export function verifySignature(body: string | Uint8Array, secret: string | Uint8Array, header: string | null | undefined): boolean {
  if (typeof header !== 'string' || !header.startsWith(PREFIX)) return false;
  const expected = Buffer.from(signBody(body, secret), 'latin1');
  const given = Buffer.from(header, 'latin1');
  return given.length === expected.length && timingSafeEqual(given, expected);
}
