/**
 * Reading an HTTP response body from a server kiln does not trust (a registry, a token
 * service) without letting it decide how much memory that takes: at most `max` bytes are
 * read, and the caller learns whether there was more.
 */

/** The body as UTF-8 text, at most `max` bytes of it; `truncated` when the server sent more (the rest is not read). */
export async function readBoundedText(res: Response, max: number): Promise<{ text: string; truncated: boolean }> {
  const declared = Number(res.headers.get('content-length') ?? '0');
  const reader = res.body?.getReader();
  if (!reader) return { text: '', truncated: false };
  if (declared > max) {
    await reader.cancel().catch(() => {});
    return { text: '', truncated: true };
  }
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > max) {
      parts.push(value.subarray(0, value.length - (size - max)));
      await reader.cancel().catch(() => {});
      return { text: Buffer.concat(parts).toString('utf8'), truncated: true };
    }
    parts.push(value);
  }
  return { text: Buffer.concat(parts).toString('utf8'), truncated: false };
}
