#!/usr/bin/env bash
# make-base-images.sh [DOCKER_HOST]  - create kiln/busybox:1-amd64, :1-arm64, :1-s390x and
# kiln/busybox:1 (= host arch) from the cached busybox-static .debs, then verify each with a
# BuildKit build for its platform (network none) that checks `uname -m`.
#
# No registry is reachable, so images are made locally. `docker import --platform` does not
# set the architecture on Docker 20.10 (the config still says amd64), so this script writes
# the `docker save` format itself (layer.tar + config JSON with architecture/variant +
# manifest.json) and loads it with POST /images/load. Layer tar and config are
# deterministic, so the image IDs are the same on every machine and daemon with the same
# busybox-static version, which keeps BuildKit cache keys equal across hosts.
# Everything goes through the Engine API with curl: no docker CLI (or buildx) is needed.
set -euo pipefail
# shellcheck source=scripts/infra/lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"
need_cmd dpkg-deb sha256sum tar curl

host=${1:-${DOCKER_HOST:-unix:///var/run/docker.sock}}
[[ "$host" == unix://* ]] || die "DOCKER_HOST must be unix://PATH (got '$host')"
sock=${host#unix://}
docker_ping "$sock" || die "no docker daemon answers on $host; run start-dockerd.sh"

REPO=kiln/busybox
TAG_PREFIX=1
debdir=$KILN_CACHE_DIR/debs
hostarch=$(host_arch)
mapfile -t handlers < <(foreign_binfmt_handlers)
ensure_binfmt "${handlers[@]}"

# arch|variant|expected `uname -m` in a build for that platform
TARGETS=("amd64||x86_64" "arm64|v8|aarch64" "s390x||s390x")

work=$(mktemp -d /tmp/kiln-base-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

image_json() { docker_api "$sock" GET "/images/$1/json" 2>/dev/null || true; }   # empty if absent
image_platform() { # "arch/variant" of an image, empty if absent
  local j; j=$(image_json "$1")
  [ -z "$j" ] || echo "$(json_str Architecture <<<"$j")/$(json_str Variant <<<"$j")"
}
image_id() { image_json "$1" | json_str Id; }

make_image() {
  local arch=$1 variant=$2 tag=$3 deb ver d rootfs layer diffid cfg cfgid applet
  deb=$(compgen -G "$debdir/busybox-static_*_${arch}.deb" | head -n1) \
    || die "no busybox-static .deb for $arch in $debdir; run install-system-packages.sh"
  ver=$(dpkg-deb -f "$deb" Version)
  d=$work/$arch; rootfs=$d/rootfs
  mkdir -p "$d/x" "$rootfs"
  dpkg-deb -x "$deb" "$d/x"
  umask 022
  mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev}
  chmod 1777 "$rootfs/tmp"; chmod 700 "$rootfs/root"
  install -m 755 "$d/x/bin/busybox" "$rootfs/bin/busybox"
  # the foreign busybox runs here through binfmt/qemu; its own applet list is authoritative
  "$rootfs/bin/busybox" --list-full >"$d/applets" || die "cannot run the $arch busybox here (binfmt/qemu?)"
  while read -r applet; do
    [ -e "$rootfs/$applet" ] || ln -s /bin/busybox "$rootfs/$applet"
  done <"$d/applets"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
  mkdir -p "$d/img/layer"
  layer=$d/img/layer/layer.tar
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -C "$rootfs" -cf "$layer" .
  diffid=$(sha256sum "$layer" | cut -d' ' -f1)
  cfg=$(printf '{"architecture":"%s",%s"os":"linux","created":"1970-01-01T00:00:00Z",' \
          "$arch" "${variant:+\"variant\":\"$variant\",}"
        printf '"config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/bin/sh"]},'
        printf '"history":[{"created":"1970-01-01T00:00:00Z","created_by":"kiln make-base-images.sh: busybox-static %s %s"}],' "$ver" "$arch"
        printf '"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$diffid")
  printf '%s' "$cfg" >"$d/img/config.json"
  cfgid=$(sha256sum "$d/img/config.json" | cut -d' ' -f1)
  mv "$d/img/config.json" "$d/img/$cfgid.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer/layer.tar"]}]' "$cfgid" "$tag" >"$d/img/manifest.json"
  tar -C "$d/img" -cf "$d/image.tar" .
  docker_api "$sock" POST "/images/load?quiet=1" -H 'Content-Type: application/x-tar' --data-binary "@$d/image.tar" >"$d/load.out" \
    || die "POST /images/load of $tag failed"
  grep -q '"error"' "$d/load.out" && { cat "$d/load.out" >&2; die "loading $tag failed"; }
  log "created $tag (sha256:${cfgid:0:12}, busybox-static $ver, $arch${variant:+/$variant})"
}

# A BuildKit build for the platform (POST /build?version=2, network none, no cache) whose
# RUN fails unless `uname -m` is what the platform should report.
verify_image() {
  local tag=$1 platform=$2 want=$3 ctx out vtag
  ctx=$work/verify-${tag##*:}
  vtag="kiln-verify/${tag##*:}:latest"
  mkdir -p "$ctx"
  # shellcheck disable=SC2016  # $(uname -m) and $u are for the RUN step's shell
  printf 'FROM %s\nRUN u="$(uname -m)"; echo "kiln-arch=$u"; test "$u" = "%s"\n' "$tag" "$want" >"$ctx/Dockerfile"
  tar -C "$ctx" -cf "$ctx.tar" Dockerfile
  out=$(docker_api "$sock" POST "/build?version=2&networkmode=none&nocache=1&platform=${platform//\//%2F}&t=${vtag//\//%2F}" \
          -H 'Content-Type: application/x-tar' --data-binary "@$ctx.tar") \
    || die "POST /build for $platform failed"
  if grep -q '"error"' <<<"$out" || ! grep -q '"moby.image.id"' <<<"$out"; then
    grep '"error"' <<<"$out" >&2 || true
    die "BuildKit build FROM $tag for $platform did not report uname -m = $want"
  fi
  docker_api "$sock" DELETE "/images/${vtag//\//%2F}" >/dev/null 2>&1 || true
  log "verified $tag: BuildKit build --platform $platform --network none ran uname -m -> $want"
}

for t in "${TARGETS[@]}"; do
  IFS='|' read -r arch variant want <<<"$t"
  tag=$REPO:$TAG_PREFIX-$arch
  have=$(image_platform "$tag")
  if [ "$have" = "$arch/$variant" ]; then
    log "$tag exists with platform linux/$arch${variant:+/$variant}; skipped"
  else
    [ -z "$have" ] || log "$tag exists with wrong platform '$have'; recreating"
    make_image "$arch" "$variant" "$tag"
  fi
done

if [ "$(image_id "$REPO:$TAG_PREFIX")" = "$(image_id "$REPO:$TAG_PREFIX-$hostarch")" ]; then
  log "$REPO:$TAG_PREFIX already points to $REPO:$TAG_PREFIX-$hostarch"
else
  docker_api "$sock" POST "/images/${REPO//\//%2F}:$TAG_PREFIX-$hostarch/tag?repo=${REPO//\//%2F}&tag=$TAG_PREFIX" >/dev/null \
    || die "tagging $REPO:$TAG_PREFIX failed"
  log "tagged $REPO:$TAG_PREFIX -> $REPO:$TAG_PREFIX-$hostarch (host arch)"
fi

for t in "${TARGETS[@]}"; do
  IFS='|' read -r arch variant want <<<"$t"
  verify_image "$REPO:$TAG_PREFIX-$arch" "linux/$arch${variant:+/$variant}" "$want"
done
log "done"
