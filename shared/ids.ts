/**
 * Identifiers. Build and attempt ids are time-ordered (a millisecond timestamp in
 * Crockford base32, then random bits), so sorting ids sorts by creation time: the build
 * list paginates on the id alone.
 *
 * The random part comes from a pooled buffer filled 4 KiB at a time (one call into the
 * CSPRNG per ~800 ids instead of one per id); tokens (`randomToken`) never use the pool.
 */
import { randomBytes, randomFillSync } from 'node:crypto';

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

/** 40 random bits (5 bytes) as 8 base32 characters. */
const RANDOM_BYTES = 5;
const pool = Buffer.alloc(4096);
let poolAt = pool.length;

function randomPart(): string {
  if (poolAt + RANDOM_BYTES > pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  // 40 bits do not fit a 32-bit int: the high 20 and the low 20 bits, 4 characters each.
  const b = poolAt;
  poolAt += RANDOM_BYTES;
  const hi = (pool[b]! << 12) | (pool[b + 1]! << 4) | (pool[b + 2]! >>> 4);
  const lo = ((pool[b + 2]! & 15) << 16) | (pool[b + 3]! << 8) | pool[b + 4]!;
  return chars20(hi) + chars20(lo);
}

function chars20(v: number): string {
  return ALPHABET[(v >>> 15) & 31]! + ALPHABET[(v >>> 10) & 31]! + ALPHABET[(v >>> 5) & 31]! + ALPHABET[v & 31]!;
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
  return `${prefix}-${timePart(now)}${counter.toString(32).padStart(3, '0')}-${randomPart()}`;
}

export function randomToken(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}
