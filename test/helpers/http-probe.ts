/**
 * Sending probe requests to a real server and keeping what went wrong: `sendRequest`
 * (fetch; Server-Sent Event streams are read up to their first events and then dropped),
 * `sendRaw` (node:http, the request target exactly as given: `..`, `%00`, `#` and raw
 * UTF-8 reach the server unnormalised), an SSE parser, and `Violations`, which collects
 * every problem of a run with the request that showed it, folds repeats of the same
 * problem into one entry with a count, and renders a readable capped summary, so a test
 * fails once with the whole list instead of at the first problem.
 */
import { request as httpRequest } from 'node:http';
import { writeFileSync } from 'node:fs';
import { coerceError } from '../../shared/index.js';

export interface ProbeRequest {
  method: string;
  /** Path and query, already encoded (sent as is). */
  target: string;
  headers: Record<string, string>;
  body?: Buffer | string | null;
}

export interface SseEvent {
  event: string;
  data: string;
  id: string | null;
}

export interface ProbeResponse {
  /** 0 when no response came (connection refused or reset). */
  status: number;
  /** The media type (lower case, parameters removed), or null when there is no content-type. */
  mediaType: string | null;
  contentType: string | null;
  headers: Record<string, string>;
  text: string;
  /** For text/event-stream responses: the events read before the stream was dropped. */
  events?: SseEvent[];
  error?: string;
}

export function mediaTypeOf(contentType: string | null | undefined): string | null {
  if (!contentType) return null;
  return contentType.split(';')[0]!.trim().toLowerCase() || null;
}

/** Parses an SSE byte stream's text into events (comments and retry lines are skipped). */
export function parseSse(text: string): { events: SseEvent[]; rest: string } {
  const events: SseEvent[] = [];
  const blocks = text.replace(/\r\n?/g, '\n').split('\n\n');
  const rest = blocks.pop() ?? '';
  for (const block of blocks) {
    let event = 'message';
    const data: string[] = [];
    let id: string | null = null;
    let any = false;
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? '' : line.slice(i + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
      else if (field === 'id') id = value;
      else continue;
      any = true;
    }
    if (any) events.push({ event, data: data.join('\n'), id });
  }
  return { events, rest };
}

export interface SseReadLimits {
  /** Stop after this many events (default 20). */
  maxEvents?: number;
  /** Stop when nothing more arrived this long after the last event (hang guard, default 400 ms). */
  idleMs?: number;
  /** Stop reading after this long in any case (hang guard, default 5 s). */
  totalMs?: number;
  /** Stop at the first event of this name (default `end`). */
  endEvent?: string;
}

async function readSse(body: ReadableStream<Uint8Array>, limits: SseReadLimits, abort: () => void): Promise<{ events: SseEvent[]; text: string }> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  const events: SseEvent[] = [];
  const maxEvents = limits.maxEvents ?? 20;
  const endEvent = limits.endEvent ?? 'end';
  const deadline = Date.now() + (limits.totalMs ?? 5000);
  let idle: NodeJS.Timeout | null = null;
  let stop!: () => void;
  const stopped = new Promise<null>((resolve) => (stop = () => resolve(null)));
  const total = setTimeout(stop, Math.max(0, deadline - Date.now()));
  try {
    for (;;) {
      const chunk = await Promise.race([reader.read(), stopped]);
      if (chunk === null || chunk.done) break;
      text += decoder.decode(chunk.value, { stream: true });
      const parsed = parseSse(text);
      events.length = 0;
      events.push(...parsed.events);
      if (events.length >= maxEvents || events.some((e) => e.event === endEvent)) break;
      if (events.length > 0) {
        if (idle) clearTimeout(idle);
        idle = setTimeout(stop, limits.idleMs ?? 400);
      }
    }
  } finally {
    clearTimeout(total);
    if (idle) clearTimeout(idle);
    abort();
    await reader.cancel().catch(() => {});
  }
  return { events, text };
}

function headersOf(h: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  h.forEach((v, k) => (out[k] = v));
  return out;
}

/** Sends one request with fetch (no redirects followed). Never throws: a failure is `status: 0`. */
export async function sendRequest(base: string, req: ProbeRequest, sse: SseReadLimits = {}): Promise<ProbeResponse> {
  const ac = new AbortController();
  try {
    const init: RequestInit = { method: req.method, headers: req.headers, redirect: 'manual', signal: ac.signal };
    if (req.body !== undefined && req.body !== null) init.body = typeof req.body === 'string' ? req.body : new Uint8Array(req.body);
    const res = await fetch(`${base}${req.target}`, init);
    const contentType = res.headers.get('content-type');
    const mediaType = mediaTypeOf(contentType);
    if (mediaType === 'text/event-stream' && res.body) {
      const { events, text } = await readSse(res.body, sse, () => ac.abort());
      return { status: res.status, mediaType, contentType, headers: headersOf(res.headers), text, events };
    }
    const text = await res.text();
    return { status: res.status, mediaType, contentType, headers: headersOf(res.headers), text };
  } catch (err) {
    const e = coerceError(err);
    return { status: 0, mediaType: null, contentType: null, headers: {}, text: '', error: `${e.message}${e.cause ? ` (${coerceError(e.cause).message})` : ''}` };
  }
}

/**
 * Sends one request with node:http, the target exactly as given (characters outside
 * printable ASCII, which node refuses to send raw, are percent-encoded as UTF-8). Never throws.
 */
export function sendRaw(base: string, req: ProbeRequest): Promise<ProbeResponse> {
  const u = new URL(base);
  const target = req.target.replace(/[^\u0021-\u007e]/gu, (ch) => [...Buffer.from(ch, 'utf8')].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''));
  return new Promise((resolve) => {
    let r;
    try {
      // a fresh connection per request: a connection the server closes cannot fail the next request
      r = httpRequest({ host: u.hostname, port: Number(u.port), method: req.method, path: target, headers: req.headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
          const contentType = headers['content-type'] ?? null;
          resolve({ status: res.statusCode ?? 0, mediaType: mediaTypeOf(contentType), contentType, headers, text: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', (err) => resolve({ status: res.statusCode ?? 0, mediaType: null, contentType: null, headers: {}, text: '', error: err.message }));
      });
    } catch (err) {
      resolve({ status: 0, mediaType: null, contentType: null, headers: {}, text: '', error: `request not sent: ${coerceError(err).message}` });
      return;
    }
    r.on('error', (err) => resolve({ status: 0, mediaType: null, contentType: null, headers: {}, text: '', error: err.message }));
    if (req.body !== undefined && req.body !== null) r.write(req.body);
    r.end();
  });
}

/** A short, printable excerpt of a body or string (control characters escaped). */
export function excerpt(s: string | Buffer | null | undefined, max = 160): string {
  if (s === null || s === undefined) return '';
  const t = typeof s === 'string' ? s : s.toString('utf8');
  const escaped = JSON.stringify(t.length > max ? t.slice(0, max) : t).slice(1, -1);
  return t.length > max ? `${escaped}… (${t.length} chars)` : escaped;
}

export interface Violation {
  /** What kind of problem (groups the summary), e.g. `undocumented status`. */
  group: string;
  /** `METHOD /path/{template}` or a document location. */
  operation: string;
  /** What is wrong, without the request-specific details (folds repeats). */
  problem: string;
  /** Request-specific details: the ajv error, the body excerpt. */
  detail?: string;
  request?: ProbeRequest;
  /** Why the request was sent (valid, or what is invalid about it). */
  intent?: string;
  status?: number;
  contentType?: string | null;
  /** The input that showed it (e.g. the hostile string); up to 24 distinct ones are kept per folded entry. */
  example?: string;
}

interface Folded {
  v: Violation;
  count: number;
  examples: string[];
}

export class Violations {
  private readonly byKey = new Map<string, Folded>();

  add(v: Violation): void {
    const key = `${v.group}\u0000${v.operation}\u0000${v.problem}`;
    const f = this.byKey.get(key);
    if (f) {
      f.count++;
      if (v.example !== undefined && f.examples.length < 24 && !f.examples.includes(v.example)) f.examples.push(v.example);
    } else this.byKey.set(key, { v, count: 1, examples: v.example !== undefined ? [v.example] : [] });
  }

  get size(): number {
    return this.byKey.size;
  }

  all(): Array<Violation & { count: number; examples: string[] }> {
    return [...this.byKey.values()].map((f) => ({ ...f.v, count: f.count, examples: f.examples }));
  }

  /** Readable summary: grouped, each distinct problem once with one example request, at most `cap` entries. */
  summary(title: string, cap = 50): string {
    const items = this.all().sort((a, b) => (a.group < b.group ? -1 : a.group > b.group ? 1 : a.operation < b.operation ? -1 : a.operation > b.operation ? 1 : 0));
    const lines = [`${title}: ${items.length} distinct violation(s)`];
    let group = '';
    let n = 0;
    for (const v of items) {
      if (n >= cap) {
        lines.push(`… and ${items.length - cap} more (set KILN_VIOLATIONS_OUT=<file> for the full list as JSON)`);
        break;
      }
      if (v.group !== group) {
        group = v.group;
        lines.push('', `== ${group}`);
      }
      n++;
      lines.push(`${n}. ${v.operation}: ${v.problem}${v.count > 1 ? ` (x${v.count})` : ''}`);
      if (v.examples.length > 0) lines.push(`     examples: ${v.examples.slice(0, 10).map((e) => `"${excerpt(e, 40)}"`).join(', ')}${v.examples.length > 10 ? `, … (${v.examples.length - 10} more)` : ''}`);
      if (v.request) {
        const hdrs = Object.entries(v.request.headers)
          .filter(([k]) => k.toLowerCase() !== 'authorization' || !/^Bearer [A-Za-z0-9_-]{20,}$/.test(v.request!.headers[k]!))
          .map(([k, val]) => `${k}: ${excerpt(val, 60)}`)
          .join('; ');
        lines.push(`     request: ${v.request.method} ${excerpt(v.request.target, 200)}${hdrs ? ` [${hdrs}]` : ''}${v.request.body ? ` body: ${excerpt(v.request.body, 120)}` : ''}${v.intent ? ` (${v.intent})` : ''}`);
      }
      if (v.status !== undefined) lines.push(`     response: ${v.status}${v.contentType !== undefined ? ` ${v.contentType ?? '(no content-type)'}` : ''}`);
      if (v.detail) lines.push(`     ${v.detail.split('\n').join('\n     ')}`);
    }
    return lines.join('\n');
  }

  /**
   * One entry per operation: its distinct problems joined (and counted), the first
   * example request kept; for lists where the per-operation view is the useful one.
   */
  byOperation(group: string): Violations {
    const out = new Violations();
    const ops = new Map<string, Array<Violation & { count: number }>>();
    for (const v of this.all()) ops.set(v.operation, [...(ops.get(v.operation) ?? []), v]);
    for (const [operation, vs] of ops) {
      const first = vs[0]!;
      out.add({ ...first, group, operation, problem: vs.map((v) => `${v.problem}${v.count > 1 ? ` (x${v.count})` : ''}`).join('; '), detail: vs.length > 1 ? undefined : first.detail });
    }
    return out;
  }

  /** Writes every violation as JSON to $KILN_VIOLATIONS_OUT (appending the test's name), if set. */
  dump(name: string): void {
    const out = process.env.KILN_VIOLATIONS_OUT;
    if (!out) return;
    writeFileSync(`${out}.${name}.json`, JSON.stringify(this.all(), null, 2));
  }
}
