/**
 * BuildKit's progress as the Docker Engine sends it, for buildkit-progress.ts: decoding a
 * `moby.buildkit.trace` aux (a base64 protobuf `moby.buildkit.v1.StatusResponse`, read with
 * the vendored buildkit-status.proto next to this module, copied to dist/ by
 * scripts/copy-assets.mjs) and the plain printer's formats (elapsed seconds, byte counts,
 * `\r` rewrites, exit codes).
 */
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import type { Type } from 'protobufjs';

const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;
const EXIT_CODE_RE = /exit code: (\d+)/g;

// Shapes of a decoded StatusResponse (protobufjs toObject, longs as numbers; absent fields are undefined).
export interface PbTimestamp { seconds?: number; nanos?: number }
export interface PbVertex {
  digest?: string; name?: string; cached?: boolean;
  started?: PbTimestamp; completed?: PbTimestamp; error?: string;
}
export interface PbVertexStatus {
  ID?: string; vertex?: string; current?: number; total?: number;
  timestamp?: PbTimestamp; started?: PbTimestamp; completed?: PbTimestamp;
}
export interface PbVertexLog { vertex?: string; timestamp?: PbTimestamp; msg?: Uint8Array }
export interface PbVertexWarning { vertex?: string; short?: Uint8Array }
export interface PbStatusResponse {
  vertexes?: PbVertex[]; statuses?: PbVertexStatus[]; logs?: PbVertexLog[]; warnings?: PbVertexWarning[];
}

let statusResponseType: Type | Error | undefined;

/** Loads buildkit-status.proto (next to this module, in source and in dist/) once. A load
 * failure (e.g. the file was not copied to dist/) is kept too and reported per event as
 * undecodable, so a packaging mistake cannot crash the agent inside followProgress. */
function statusType(): Type {
  if (statusResponseType === undefined) {
    try {
      statusResponseType = protobuf
        .loadSync(fileURLToPath(new URL('./buildkit-status.proto', import.meta.url)))
        .lookupType('moby.buildkit.v1.StatusResponse');
    } catch (err) {
      statusResponseType = new Error(`cannot load buildkit-status.proto: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  if (statusResponseType instanceof Error) throw statusResponseType;
  return statusResponseType;
}

export function decodeStatus(aux: unknown): PbStatusResponse {
  if (typeof aux !== 'string') throw new Error(`aux is ${aux === null ? 'null' : typeof aux}, not a base64 string`);
  if (aux.length % 4 !== 0 || !BASE64_RE.test(aux)) throw new Error(`aux is not valid base64 (${aux.length} chars)`);
  const type = statusType();
  return type.toObject(type.decode(Buffer.from(aux, 'base64')), { longs: Number }) as PbStatusResponse;
}

export function toMs(ts: PbTimestamp | undefined): number | undefined {
  if (!ts) return undefined;
  return (ts.seconds ?? 0) * 1000 + (ts.nanos ?? 0) / 1e6;
}

/** Seconds since the vertex started, as the plain printer shows them before a log line. */
export function formatElapsed(ms: number): string {
  const sec = Math.max(0, ms) / 1000;
  return sec.toFixed(sec < 10 ? 3 : sec < 100 ? 2 : 1);
}

/** Byte counts like BuildKit's units.Bytes with %.2f: `37B`, `1.50kB`, `2.05MB`. */
export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let value = n;
  let i = 0;
  while (Math.abs(value) >= 1000 && i < units.length - 1) {
    value /= 1000;
    i++;
  }
  return i === 0 ? `${n}B` : `${value.toFixed(2)}${units[i]}`;
}

export function lastExitCode(message: string): number | null {
  let code: number | null = null;
  for (const m of message.matchAll(EXIT_CODE_RE)) code = Number(m[1]);
  return code;
}

/** Applies the `\r` rule from the header to one line (without its `\n`). */
export function settleCarriageReturns(line: string): string {
  const trimmed = line.replace(/\r+$/, '');
  return trimmed.slice(trimmed.lastIndexOf('\r') + 1);
}
