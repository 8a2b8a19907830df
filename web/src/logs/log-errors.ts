/**
 * Which log lines are errors, for "jump to the first error" and the error highlight.
 *
 * The rule (on the plain text, escapes removed):
 * 1. An **error line** contains one of the words `error`, `errors`, `fatal`, `failed`,
 *    `failure`, `panic` (any case, whole words: `ERROR:`, `#8 ERROR: process … did not
 *    complete successfully`, `main.c:3: error: …`, `[kiln] attempt 1 failed`) or `npm ERR!`,
 *    unless it is a count of none or a name: `0 errors`, `0 failed`, `no errors`,
 *    `errors: 0`, `failed=0`, `-Werror`, `error.h`/`error.c`-like file names.
 * 2. **BuildKit's error blocks**: after an error line, a line of six or more dashes
 *    (`------`) opens a block that the next such line closes (BuildKit prints the failing
 *    step's last output lines ` > [4/4] RUN …:` and the Dockerfile excerpt this way). The
 *    block's lines, dashes included, are **error context**; another block may follow
 *    within 3 lines (the `Dockerfile:4` / `--------------------` excerpt). A block ends
 *    after 200 lines at most.
 * The first error is the first error line (context lines only follow one).
 */

/** Per-line flag: not an error, an error line, or a line of an error block. */
export const LINE_PLAIN = 0;
export const LINE_ERROR = 1;
export const LINE_ERROR_CONTEXT = 2;
export type LineFlag = typeof LINE_PLAIN | typeof LINE_ERROR | typeof LINE_ERROR_CONTEXT;

const ERROR_WORDS = /\b(?:errors?|fatal|failed|failure|panic)\b|npm ERR!/i;
const NOT_ERRORS = /\b(?:0|no|zero) (?:errors?|failed|failures?)\b|\b(?:errors?|failed|failures?)[:=] ?0\b|-W(?:no-)?error\b|\berrors?\.[a-z]{1,4}\b/gi;
const DASHES = /^\s*-{6,}\s*$/;
/** How many lines after an error line (or a closed block) a dash line still opens a block. */
const BLOCK_REACH = 3;
/** A block longer than this is not one of BuildKit's (they hold the last 6 lines of output): it ends there. */
const MAX_BLOCK_LINES = 200;

/** true when `text` is an error line by rule 1. */
export function isErrorLine(text: string): boolean {
  if (!ERROR_WORDS.test(text)) return false;
  // the exceptions are cut out and the rest checked again: `0 failed, 2 errors` is still one
  return ERROR_WORDS.test(text.replace(NOT_ERRORS, ' '));
}

/** Classifies lines one after another (rule 2 needs the lines before). */
export class ErrorClassifier {
  private inBlock = false;
  private blockStart = 0;
  /** The last line index at which a dash line opens a block (-1: none). */
  private reach = -1;

  /** The flag of line `index` (called once per line, in order). */
  classify(index: number, text: string): LineFlag {
    if (DASHES.test(text)) {
      if (this.inBlock) {
        this.inBlock = false;
        this.reach = index + BLOCK_REACH;
        return LINE_ERROR_CONTEXT;
      }
      if (index <= this.reach) {
        this.inBlock = true;
        this.blockStart = index;
        return LINE_ERROR_CONTEXT;
      }
      return LINE_PLAIN;
    }
    if (this.inBlock && index - this.blockStart > MAX_BLOCK_LINES) this.inBlock = false;
    if (this.inBlock) return LINE_ERROR_CONTEXT;
    if (isErrorLine(text)) {
      this.reach = index + BLOCK_REACH;
      return LINE_ERROR;
    }
    return LINE_PLAIN;
  }
}
