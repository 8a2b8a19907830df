/**
 * Build secrets (issue 12): the shape of a secret's name and the bounds every part of
 * kiln checks (the spec, the protocol, the coordinator's store, the CLI). A name is what a
 * Dockerfile mounts (`RUN --mount=type=secret,id=NAME`, at /run/secrets/NAME); it is the
 * node-name shape, so it is also safe in a URL path and a file name.
 */
import { NAME_RE, NAME_RULE } from './names.js';

export const SECRET_NAME_RE = NAME_RE;
export const SECRET_NAME_RULE = NAME_RULE;
/** The largest value a secret may hold (bytes). */
export const MAX_SECRET_BYTES = 64 * 1024;
/** The most secrets the coordinator holds. */
export const MAX_SECRETS = 1000;
/** The most secrets one node may name (32 x 64 KiB stays well inside an assign frame). */
export const MAX_NODE_SECRETS = 32;
