#!/usr/bin/env bash
# What could a different register layout buy at most? Builds consentd from
# HEAD with register-ceiling.patch, whose switches (environment variables)
# remove parts of the register's write work, and runs bench/compare's gRPC
# write at concurrency 64 against etcd once per variant. The patched binary
# is unsafe by construction (no idempotency, wrong reads): it measures a
# ceiling and is never a node. Run bash bench/compare.sh once first (it
# installs etcd and ghz). Extra arguments go to bench/compare. About 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo /root/go)/bin:$PATH"
command -v ghz >/dev/null && [ -x /usr/bin/etcd ] || { echo "run bash bench/compare.sh first: it installs etcd and ghz" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src"
git archive HEAD | tar -x -C "$tmp/src"
patch="$PWD/bench/experiments/register-ceiling.patch"
(cd "$tmp/src" && git apply "$patch") || { echo "register-ceiling.patch no longer applies to fsm/apply.go: redo it" >&2; exit 1; }
(cd "$tmp/src" && go build -buildvcs=false -o "$tmp/consentd" ./cmd/consentd)
go build -buildvcs=false -o "$tmp/compare" ./bench/compare

out="bench/results/ceiling-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
variants=(
  "as-built"
  "no-requests CEILING_NO_REQUESTS=1"
  "no-requests-no-current CEILING_NO_REQUESTS=1 CEILING_NO_CURRENT=1"
  "append-only CEILING_NO_REQUESTS=1 CEILING_NO_CURRENT=1 CEILING_APPEND_DECISIONS=1"
  "no-register CEILING_NO_REGISTER=1"
)
for v in "${variants[@]}"; do
  read -r name envs <<<"$v"
  echo "== $name ${envs:-}" >&2
  # shellcheck disable=SC2086 # envs is a list of NAME=value words
  env ${envs:-} "$tmp/compare" -consentd "$tmp/consentd" -etcd /usr/bin/etcd -ghz "$(command -v ghz)" -wrk "$(command -v wrk || echo wrk)" \
    -ops write -protocols grpc -conc 64 -out "$out/$name" -log-level warn "$@" >/dev/null
done

echo "consentd $(git rev-parse --short HEAD) with register-ceiling.patch, $(date -u +%Y-%m-%dT%H:%MZ)" | tee "$out/ceiling.txt"
printf '%-24s %10s %10s %7s %12s %12s %7s\n' variant "ok/s" "etcd ok/s" ratio "CPU s/1k" "etcd CPU" ratio | tee -a "$out/ceiling.txt"
for v in "${variants[@]}"; do
  read -r name _ <<<"$v"
  # results.csv: one row for write,grpc,64 with unrounded figures.
  awk -F, -v n="$name" 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    $col["op"] == "write" { printf "%-24s %10.0f %10.0f %6.2fx %12.3f %12.3f %6.2fx\n", n,
      $col["consentd_ok_per_s"], $col["etcd_ok_per_s"], $col["ratio_ok_per_s"],
      $col["consentd_cpu_s_per_1k_ok"], $col["etcd_cpu_s_per_1k_ok"], $col["ratio_cpu"] }' \
    "$out/$name/results.csv"
done | tee -a "$out/ceiling.txt"
echo "results: $out" >&2
