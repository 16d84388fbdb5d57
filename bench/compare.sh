#!/usr/bin/env bash
# Side by side with etcd: installs what a fresh Debian machine lacks (etcd,
# wrk, ghz), builds consentd, and runs bench/compare, which starts a 3-node
# cluster of each on 127.0.0.1 and prints the consentd/etcd ratio table.
# Run from anywhere as root; extra arguments go to the program
# (bash bench/compare.sh -h lists them). See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || { echo "bench/compare.sh: needs Go (1.26 or later) on PATH or in /usr/local/go" >&2; exit 1; }
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
  # Debian's etcd-server starts its service on install (systemd unit or
  # init script); a policy-rc.d exiting 101 tells the maintainer scripts not to.
  had_policy=false
  [ -e /usr/sbin/policy-rc.d ] && had_policy=true
  $had_policy || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  $had_policy || rm -f /usr/sbin/policy-rc.d
fi

# Debian's etcd service (started on install where policy allows, or left
# running) would take CPU beside the measured clusters, which use random
# ports; stop it for the run. It stays installed and, with systemd, enabled.
listens_2379() { ss -Hltn 'sport = :2379' 2>/dev/null | grep -q .; }
if listens_2379; then
  say "something listens on port 2379 (Debian's etcd service?): stopping it"
  if [ -d /run/systemd/system ]; then
    systemctl stop etcd || true
  elif [ -x /etc/init.d/etcd ]; then
    /etc/init.d/etcd stop || true
  fi
  for _ in 1 2 3 4 5 6 7 8 9 10; do listens_2379 || break; sleep 0.5; done
  if listens_2379; then
    say "port 2379 is still taken; stop that process and run again:"
    ss -Hltnp 'sport = :2379' >&2
    exit 1
  fi
fi

# go install leaves ghz --version at "dev"; the module version is in the binary.
if ! command -v ghz >/dev/null || ! go version -m "$(command -v ghz)" | grep -q 'github.com/bojand/ghz[[:space:]]*v0.93.0'; then
  say "installing ghz v0.93.0"
  go install github.com/bojand/ghz/cmd/ghz@v0.93.0
fi

# etcd 3.4 refuses to start on arm64 unless told this.
[ "$(uname -m)" = aarch64 ] && export ETCD_UNSUPPORTED_ARCH=arm64

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
say "building consentd and bench/compare"
go build -o "$out/consentd" ./cmd/consentd
go build -o "$out/compare" ./bench/compare

"$out/compare" -consentd "$out/consentd" -etcd /usr/bin/etcd -ghz "$(command -v ghz)" -wrk "$(command -v wrk)" "$@"
