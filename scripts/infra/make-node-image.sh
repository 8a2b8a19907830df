#!/usr/bin/env bash
# make-node-image.sh [DOCKER_HOST]  - create kiln/node:20-local, a Node.js base image made
# from this host's own node binary (with the shared libraries it links), npm and CA
# certificates on top of kiln/busybox:1. It stands in for node:20-bookworm-slim where no
# image registry is reachable, so Dockerfile.agent can be built here:
#   NODE_IMAGE=kiln/node:20-local
# Skipped when the image exists and holds the same node version. Needs make-base-images.sh first.
set -euo pipefail
# shellcheck source=scripts/infra/lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"
need_cmd node ldd tar curl

host=${1:-${DOCKER_HOST:-unix:///var/run/docker.sock}}
sock=${host#unix://}
docker_ping "$sock" || die "no docker daemon answers on $host"
TAG=kiln/node:20-local
node_bin=$(readlink -f "$(command -v node)")
version=$("$node_bin" --version)
[[ "$version" == v20.* ]] || die "host node is $version; kiln targets Node 20"

have=$(docker_api "$sock" GET "/images/${TAG//\//%2F}/json" 2>/dev/null | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{try{process.stdout.write(JSON.parse(s).Config.Labels['kiln.node-version']||'')}catch{}})" || true)
if [ "$have" = "$version" ]; then
  log "$TAG exists with node $version; skipped"
  exit 0
fi

work=$(mktemp -d /tmp/kiln-node-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs"
cp "$node_bin" "$root/usr/local/bin/node"
# the shared libraries node links against, at the same paths
ldd "$node_bin" | grep -o '/[^ ]*' | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
mkdir -p "$root/usr/local/lib/node_modules"
cp -a "$npm_dir" "$root/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
tar -C "$root" -cf "$work/root.tar" .
cat >"$work/Dockerfile" <<EOF
FROM kiln/busybox:1
ADD root.tar /
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL kiln.node-version=$version
RUN node --version && npm --version
CMD ["node"]
EOF
tar -C "$work" -cf "$work/context.tar" Dockerfile root.tar
out=$(docker_api "$sock" POST "/build?version=2&networkmode=none&t=${TAG//\//%2F}" -H 'Content-Type: application/x-tar' --data-binary "@$work/context.tar") \
  || die "building $TAG failed"
if grep -q '"error"' <<<"$out"; then grep '"error"' <<<"$out" >&2; die "building $TAG failed"; fi
log "created $TAG (node $version from $node_bin, npm, CA certificates)"
