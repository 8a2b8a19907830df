/**
 * A lowdb adapter that is durable and refuses to invent data.
 *
 * lowdb's own JSONFile adapter writes through steno (temp file + rename, no fsync) and
 * returns null for a missing file, which lowdb then replaces with default data: a lost
 * or corrupt state file would silently become an empty database. This adapter instead:
 * - `read()` throws a KilnError (E_STATE) naming the file when it is missing, unreadable,
 *   not JSON or not a kiln state file, and leaves the file untouched for inspection;
 * - `write()` goes through `writeFileDurable` (temp, fsync, rename, fsync dir), so a
 *   write that resolved is on disk.
 * The in-memory form may differ from the JSON (`decode`/`encode`: the state keeps Maps).
 */
import { readFile } from 'node:fs/promises';
import type { Adapter } from 'lowdb';
import { coerceError, KilnError, errnoCode } from '../../shared/index.js';

export interface DurableJsonAdapterOptions<T> {
  /** Checks the parsed JSON is this kind of file and converts it; returns the data or a problem description. */
  decode: (value: unknown) => T | string;
  /** The JSON form of the data. */
  encode: (data: T) => unknown;
  /** Hint appended to errors, e.g. how to start over. */
  recoveryHint: string;
  write: (path: string, text: string) => Promise<void>;
}

export class DurableJsonAdapter<T> implements Adapter<T> {
  constructor(
    readonly path: string,
    private readonly opts: DurableJsonAdapterOptions<T>,
  ) {}

  async read(): Promise<T> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      const code = errnoCode(err);
      const what = code === 'ENOENT' ? 'is missing' : `cannot be read (${code ?? coerceError(err).message})`;
      throw new KilnError('E_STATE', `state file ${this.path} ${what}. ${this.opts.recoveryHint}`, { cause: err });
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new KilnError(
        'E_STATE',
        `state file ${this.path} is corrupt (${coerceError(err).message}); it was left as it is for inspection. ${this.opts.recoveryHint}`,
        { cause: err },
      );
    }
    const decoded = this.opts.decode(value);
    if (typeof decoded === 'string') {
      throw new KilnError('E_STATE', `state file ${this.path} is not a valid kiln state file (${decoded}); it was left as it is for inspection. ${this.opts.recoveryHint}`);
    }
    return decoded;
  }

  async write(data: T): Promise<void> {
    await this.opts.write(this.path, JSON.stringify(this.opts.encode(data)));
  }
}
