/**
 * When the log pane follows the tail (pure; the pane calls it on every scroll event):
 * reaching the bottom (within 1.5 rows) resumes following; the user scrolling up stops it.
 * New lines make the content taller without moving scrollTop, so growth alone never stops
 * following, and the pane's own scroll to the bottom only ever moves scrollTop down.
 */
export interface ScrollPosition {
  readonly scrollTop: number;
  readonly scrollHeight: number;
  readonly clientHeight: number;
}

export function followAfterScroll(following: boolean, previousTop: number, now: ScrollPosition, rowHeight: number): boolean {
  if (now.scrollHeight - now.scrollTop - now.clientHeight < rowHeight * 1.5) return true;
  if (now.scrollTop < previousTop) return false;
  return following;
}
