/**
 * `pullHosts`: the registry hosts (with port, `docker.io` for Docker Hub names) a
 * Dockerfile's build pulls from: its FROM bases and the images of `COPY --from=` and
 * `RUN --mount=from=` (dockerfile/base-images.ts `pullRefs`). Pure, no I/O. The
 * coordinator sends registry credentials for these hosts only.
 */
import { parseImageRef } from '../spec/image-ref.js';
import { pullRefs } from './base-images.js';

/** The most hosts reported for one Dockerfile (a node's assignment carries at most 16 credentials). */
export const MAX_PULL_HOSTS = 16;

/**
 * The hosts of the images `dockerfile` pulls, given the node's build args and the target
 * platform (`TARGETPLATFORM` and its parts; the build platform is the agent's and unknown
 * here, so a ref using it is left out). A Dockerfile that cannot be parsed gives none:
 * the build reports that error itself.
 */
export function pullHosts(dockerfile: string, buildArgs: Record<string, string>, platform: string): string[] {
  const [os, arch, variant] = platform.split('/');
  let refs: string[];
  try {
    refs = pullRefs(dockerfile, buildArgs, { TARGETPLATFORM: platform, TARGETOS: os ?? '', TARGETARCH: arch ?? '', TARGETVARIANT: variant ?? '' });
  } catch {
    return [];
  }
  const hosts = new Set<string>();
  for (const ref of refs) {
    const r = parseImageRef(ref);
    if (r.ok) hosts.add(r.ref.domain);
    if (hosts.size >= MAX_PULL_HOSTS) break;
  }
  return [...hosts];
}

