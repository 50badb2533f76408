#!/usr/bin/env bash
# Build the Iodine peer (C server, Ruby) from its public repository into bench/.build/iodine.
#
#   IODINE_SRC=/path/to/iodine-clone [IODINE_REF=v0.7.58] bash bench/iodine_build.sh
#
# IODINE_SRC: a clone of github.com/boazsegev/iodine (a work tree, or a bare git directory).
# When it is a git repository, IODINE_REF (default v0.7.58, the version of the issue 17 figures)
# is exported with `git archive`; otherwise the folder is copied as it is. Ruby, its headers and
# rack come from the system packages (apt). Nothing is written to IODINE_SRC.
# bench/run.py and bench/fanout.py add the "iodine" peer when bench/.build/iodine exists.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${IODINE_SRC:?set IODINE_SRC to a clone of the iodine repository}"
REF="${IODINE_REF:-v0.7.58}"
OUT="$PWD/bench/.build/iodine"
if ! command -v ruby >/dev/null || ! ruby -e 'require "mkmf"; require "rack"' 2>/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ruby ruby-dev ruby-rack gcc make
fi
rm -rf "$OUT" && mkdir -p "$OUT"
if git -C "$IODINE_SRC" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$IODINE_SRC" archive "$REF" | tar -x -C "$OUT"
else
  cp -R "$IODINE_SRC"/. "$OUT"
fi
# The C extension, built where the Ruby library expects it (lib/iodine/iodine_ext.so).
(cd "$OUT/ext/iodine" && ruby extconf.rb >/dev/null && make -s -j"$(nproc)")
cp "$OUT"/ext/iodine/iodine_ext.so "$OUT/lib/iodine/"
ruby -I "$OUT/lib" -e 'require "iodine"; puts "iodine #{Iodine::VERSION} built in '"$OUT"'"'
