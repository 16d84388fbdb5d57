#!/usr/bin/env bash
# Regenerates every *.pb.go, *.pb.gw.go and the OpenAPI document from the
# .proto files. Plugin versions are pinned here; protoc comes from Debian's
# protobuf-compiler (3.21.12 on bookworm). CI runs this and fails on a diff.
set -euo pipefail
cd "$(dirname "$0")"

PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.1
PROTOC_GEN_GATEWAY=github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@v2.33.0
PROTOC_GEN_OPENAPI=github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@v2.33.0

bin="${PROTOC_PLUGIN_DIR:-$(go env GOPATH)/bin}"
if [ "${1:-}" = "--install" ] || [ ! -x "$bin/protoc-gen-openapiv2" ]; then
  for p in "$PROTOC_GEN_GO" "$PROTOC_GEN_GO_GRPC" "$PROTOC_GEN_GATEWAY" "$PROTOC_GEN_OPENAPI"; do
    GOBIN="$bin" go install "$p"
  done
fi
command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler libprotobuf-dev" >&2; exit 1; }
export PATH="$bin:$PATH"

gateway=consent/v1/consent_gateway.yaml
protoc -I . -I /usr/include \
  --go_out=paths=source_relative:. \
  --go-grpc_out=paths=source_relative:. \
  command/v1/command.proto cluster/v1/cluster.proto consent/v1/consent.proto
protoc -I . -I /usr/include \
  --grpc-gateway_out=paths=source_relative,grpc_api_configuration=$gateway,generate_unbound_methods=false:. \
  --openapiv2_out=grpc_api_configuration=$gateway,json_names_for_fields=true,disable_default_errors=false:. \
  consent/v1/consent.proto
