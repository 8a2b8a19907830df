#!/bin/sh
# A stand-in for CPython in the wheel-refinery example (the base image is busybox): just
# enough to show a runtime artifact being bind-mounted into later builds and used there.
set -e
case "$1" in
  --version)
    echo "Python 3.12.0 (kiln demo runtime, $(uname -m))" ;;
  build-wheel)   # build-wheel SRC PACKS OUT
    src=$2 packs=$3 out=$4
    name=$(cat "$src/NAME") ver=$(cat "$src/VERSION")
    whl="$out/$name-$ver-cp312-cp312-linux_$(uname -m).whl"
    mkdir -p /tmp/wheel
    cp -r "$src/$name" /tmp/wheel/
    for p in "$packs"/*.tar; do tar -xf "$p" -C /tmp/wheel; done
    "$0" --version > /tmp/wheel/BUILT-WITH
    (cd /tmp/wheel && find . -type f | sort | while read -r f; do echo "$f,sha256=$(sha256sum "$f" | cut -d' ' -f1)"; done) > /tmp/wheel/RECORD
    tar -C /tmp/wheel -cf "$whl" .
    echo "built $(basename "$whl") ($(wc -c < "$whl") bytes)" ;;
  repair)        # repair IN OUT
    for w in "$2"/*.whl; do
      fixed="$3/$(basename "$w" | sed "s/linux_$(uname -m)/manylinux_2_28_$(uname -m)/")"
      cp "$w" "$fixed"
      echo "repaired $(basename "$w") -> $(basename "$fixed")"
    done ;;
  *)
    echo "python (kiln demo): unsupported arguments: $*" >&2; exit 2 ;;
esac
