#!/usr/bin/env bash
# Does coalescing single writes into one raft entry pay? Builds consentd
# from HEAD with and without coalesce-writes.patch (the leader proposes the
# single writes that arrive while earlier entries are in flight as one
# command.v1 Commands entry; each keeps its own outcome) and runs
# bench/compare's write rows against etcd, the builds alternating, PAIRS
# times. Tried in stop 14 and not kept: see bench/README.md ("Tried and not
# kept"). Run bash bench/compare.sh once first (it installs etcd, wrk and
# ghz). Extra arguments go to bench/compare. About 5 minutes a pair.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo /root/go)/bin:$PATH"
command -v ghz >/dev/null && command -v wrk >/dev/null && [ -x /usr/bin/etcd ] \
  || { echo "run bash bench/compare.sh first: it installs etcd, wrk and ghz" >&2; exit 1; }
pairs="${PAIRS:-2}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src"
git archive HEAD | tar -x -C "$tmp/src"
# Both builds from HEAD's tree, so uncommitted changes are in neither.
(cd "$tmp/src" && go build -buildvcs=false -o "$tmp/consentd-base" ./cmd/consentd)
patch="$PWD/bench/experiments/coalesce-writes.patch"
(cd "$tmp/src" && git apply "$patch") || { echo "coalesce-writes.patch no longer applies to HEAD: redo it" >&2; exit 1; }
# The patch leaves out generated code; protoc and the pinned plugins make it.
(cd "$tmp/src" && bash proto/generate.sh >/dev/null && go build -buildvcs=false -o "$tmp/consentd-coalesce" ./cmd/consentd)
go build -buildvcs=false -o "$tmp/compare" ./bench/compare

out="bench/results/coalesce-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
for pair in $(seq "$pairs"); do
  for build in base coalesce; do
    "$tmp/compare" -consentd "$tmp/consentd-$build" -etcd /usr/bin/etcd -ghz "$(command -v ghz)" -wrk "$(command -v wrk)" \
      -ops write -conc 16,64 -out "$out/$build-$pair" "$@" >"$out/$build-$pair.log" 2>&1
    echo "== $build, pair $pair"
    sed -n '3,6p' "$out/$build-$pair/results.txt"
  done
done
echo "results in $out"
