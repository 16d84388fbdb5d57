// Package consentv1 is the public consentd API: generated gRPC services, the
// REST gateway handlers, and the OpenAPI (v2) document describing them.
package consentv1

import _ "embed"

// OpenAPI is the generated OpenAPI v2 document for the REST gateway, served
// at /v1/openapi.json.
//
//go:embed consent.swagger.json
var OpenAPI []byte
