#!/usr/bin/env bash
# Builds the Disque server once per machine and prints the path of disque-server.
#
#   scripts/disque.sh            # prints ~/.cache/qhive-services/disque-0192ba7/src/disque-server
#   "$(scripts/disque.sh)" --port 7711 --bind 127.0.0.1 --daemonize no   # a server of your own
#
# Disque is archived upstream (no releases, no distribution packages it): the source is
# testkit/vendor/disque-0192ba7.tar.gz (github.com/antirez/disque at 0192ba7, BSD licence,
# see testkit/vendor/README.md). Needs make and a C compiler; about 20 s on two cores.
# $QHIVE_SERVICES_CACHE chooses the cache folder; $QHIVE_DISQUE_ARCHIVE another archive.
#
# Exit status: 0 and the path on stdout; 2 when make or a C compiler is missing (tests
# skip then); 1 when the build failed (the message names its log).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=disque-0192ba7
archive="${QHIVE_DISQUE_ARCHIVE:-$root/testkit/vendor/$name.tar.gz}"
cache="${QHIVE_SERVICES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qhive-services}"
bin="$cache/$name/src/disque-server"

if [ ! -x "$bin" ]; then
  for tool in make cc; do
    command -v "$tool" >/dev/null || { echo "disque.sh: building disque-server needs make" \
      "and a C compiler (cc); '$tool' is not installed" >&2; exit 2; }
  done
  [ -f "$archive" ] || { echo "disque.sh: no Disque source archive at $archive" >&2; exit 1; }
  mkdir -p "$cache"
  # Test workers started together build once: the others wait here for the first.
  if command -v flock >/dev/null; then
    exec 9>"$cache/$name.lock"
    flock 9
  fi
  if [ ! -x "$bin" ]; then
    tmp=$(mktemp -d "$cache/build.XXXXXX")
    tar xzf "$archive" -C "$tmp"
    if ! make -C "$tmp/$name" -j2 >"$tmp/build.log" 2>&1; then
      echo "disque.sh: the build of disque-server failed, see $tmp/build.log" >&2
      exit 1
    fi
    # The finished tree appears under its final name at once (a rename): a reader never
    # sees half a build. (Without flock another build may have finished meanwhile.)
    if [ ! -x "$bin" ]; then
      rm -rf "${cache:?}/$name"
      mv "$tmp/$name" "$cache/$name"
    fi
    rm -rf "$tmp"
  fi
fi
echo "$bin"
