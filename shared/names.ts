/**
 * The shapes of names and ids, in one place: the spec, the protocol, the HTTP routes and
 * the configs check against these. A name that does not match is refused with a message
 * saying what a good one looks like. None of them admits `__proto__` (a plain object
 * would drop it or change its prototype); `constructor` and `toString` are valid names and
 * every index keyed by a name is a Map. Ids are only what `newId` makes.
 */

/** The name shape without anchors, for patterns that contain names (log cursors). */
export const NAME_SOURCE = '[A-Za-z0-9][A-Za-z0-9_.-]{0,62}';
/** Node and agent names: 1-63 characters of [A-Za-z0-9_.-], starting with a letter or digit. */
export const NAME_RE = new RegExp(`^${NAME_SOURCE}$`);
export const NAME_RULE = '1-63 characters of [A-Za-z0-9_.-], starting with a letter or digit';

/**
 * Agent names as a path parameter: the agent-name shape. (Kept apart from NAME_RE in case
 * agent names ever widen; today they are the same.)
 */
export const AGENT_NAME_PARAM_RE = NAME_RE;

/** Label keys (agent labels, node label requirements). */
export const LABEL_KEY_RE = /^[A-Za-z0-9][A-Za-z0-9_./-]{0,127}$/;
export const LABEL_KEY_RULE = '1-128 characters of [A-Za-z0-9_./-], starting with a letter or digit';

/** Environment variable and build-arg names (any but `__proto__`). */
export const ENV_NAME_RE = /^(?!__proto__$)[A-Za-z_][A-Za-z0-9_]{0,127}$/;

/** Ids made by `newId` (shared/ids.ts): `<prefix>-<time and counter>-<random>`. */
export const BUILD_ID_RE = /^b-[0-9a-z]{13,16}-[0-9a-z]{8}$/;
export const ATTEMPT_ID_RE = /^a-[0-9a-z]{13,16}-[0-9a-z]{8}$/;
export const BUILD_ID_RULE = 'a build id as kiln gives it (b-<13 to 16 of [0-9a-z]>-<8 of [0-9a-z]>, e.g. b-01kbx2f3q4000-7d2k9x4m)';
