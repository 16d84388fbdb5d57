#!/usr/bin/env bash
# Side by side with etcd: installs what a fresh Debian machine lacks (etcd,
# wrk, ghz), builds consentd, and runs bench/compare, which starts a 3-node
# cluster of each on 127.0.0.1 and prints the consentd/etcd ratio table.
# Run from anywhere as root; extra arguments go to the program
# (bash bench/compare.sh -h lists them). See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
GOBIN="$(go env GOBIN)"
[ -n "$GOBIN" ] || GOBIN="$(go env GOPATH)/bin"
export PATH="$GOBIN:$PATH"

say() { printf '== %s\n' "$*" >&2; }

pkgs=()
[ -x /usr/bin/etcd ] || pkgs+=(etcd-server)
command -v wrk >/dev/null || pkgs+=(wrk)
if [ ${#pkgs[@]} -gt 0 ]; then
  say "installing ${pkgs[*]}"
  apt-get update -qq
  # Debian's etcd-server starts an etcd service on install where systemd
  # runs; policy-rc.d 101 tells the maintainer scripts not to.
  had_policy=false
  [ -e /usr/sbin/policy-rc.d ] && had_policy=true
  $had_policy || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  $had_policy || rm -f /usr/sbin/policy-rc.d
fi

# A system etcd (from the package, or left running) would take CPU during
# the measurements and its default port; the benchmark's own clusters use
# random ports, but a stray etcd must not run beside them.
if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
  say "stopping the system etcd service"
  systemctl stop etcd
  systemctl disable --quiet etcd 2>/dev/null || true
fi
if command -v ss >/dev/null && ss -Hltn 'sport = :2379' | grep -q .; then
  say "something listens on 127.0.0.1:2379 (a system etcd?); stop it first:"
  ss -Hltnp 'sport = :2379' >&2
  exit 1
fi

# go install leaves ghz --version at "dev"; the module version is in the binary.
if ! command -v ghz >/dev/null || ! go version -m "$(command -v ghz)" | grep -q 'github.com/bojand/ghz[[:space:]]*v0.93.0'; then
  say "installing ghz v0.93.0"
  go install github.com/bojand/ghz/cmd/ghz@v0.93.0
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
say "building consentd and bench/compare"
go build -o "$out/consentd" ./cmd/consentd
go build -o "$out/compare" ./bench/compare

"$out/compare" -consentd "$out/consentd" -etcd /usr/bin/etcd -ghz "$(command -v ghz)" -wrk "$(command -v wrk)" "$@"
