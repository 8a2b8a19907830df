/**
 * Platforms in OCI form (`linux/amd64`, `linux/arm64/v8`, `linux/s390x`): validation and
 * mapping from what `uname -m` / the Docker Engine report to OCI architecture names.
 */

export const KNOWN_ARCHES = ['amd64', 'arm64', 's390x', 'ppc64le', 'riscv64', '386', 'arm', 'mips64le'] as const;
const PLATFORM_RE = /^linux\/([a-z0-9]+)(?:\/(v[0-9]+))?$/;

/** Returns an error message for an invalid platform string, or null when it is valid. */
export function platformProblem(platform: string): string | null {
  const m = PLATFORM_RE.exec(platform);
  if (!m) return `invalid platform '${platform}' (expected linux/<arch>[/<variant>], e.g. linux/amd64)`;
  if (!(KNOWN_ARCHES as readonly string[]).includes(m[1]!)) {
    return `unknown architecture '${m[1]}' in platform '${platform}' (known: ${KNOWN_ARCHES.join(', ')})`;
  }
  return null;
}

/** Maps `uname -m` / Node's `process.arch` / Docker's `Architecture` to an OCI arch name. */
export function ociArch(arch: string): string {
  switch (arch) {
    case 'x86_64':
    case 'x64':
    case 'amd64':
      return 'amd64';
    case 'aarch64':
    case 'arm64':
      return 'arm64';
    case 'ia32':
    case 'i386':
    case 'i686':
      return '386';
    case 'ppc64':
    case 'ppc64le':
      return 'ppc64le';
    case 'armv7l':
    case 'arm':
      return 'arm';
    default:
      return arch;
  }
}

/** `linux/arm64/v8` and `linux/arm64` are the same platform for matching. */
export function normalizePlatform(platform: string): string {
  return platform === 'linux/arm64/v8' ? 'linux/arm64' : platform;
}
