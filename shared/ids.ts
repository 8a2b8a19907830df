/**
 * Identifiers. Build and attempt ids are time-ordered (a millisecond timestamp in
 * Crockford base32, then random bits), so sorting ids sorts by creation time: the build
 * list paginates on the id alone.
 */
import { randomBytes } from 'node:crypto';

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

function base32(bytes: Uint8Array): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += ALPHABET[(value << (5 - bits)) & 31];
  return out;
}

function timePart(ms: number): string {
  let t = ms;
  let out = '';
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[t % 32]! + out;
    t = Math.floor(t / 32);
  }
  return out;
}

let lastMs = 0;
let counter = 0;

/** A time-ordered id like `b-01k3x9q2vn-7d2k9x4m`; `prefix` names the kind (b = build, a = attempt). */
export function newId(prefix: string, now = Date.now()): string {
  // Within one millisecond, a counter keeps ids from this process strictly increasing.
  if (now <= lastMs) {
    counter++;
    now = lastMs;
  } else {
    lastMs = now;
    counter = 0;
  }
  const rand = base32(randomBytes(5));
  return `${prefix}-${timePart(now)}${counter.toString(32).padStart(3, '0')}-${rand}`;
}

export function randomToken(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}
