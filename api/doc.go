// Package api owns the public gRPC services, the REST gateway in front of
// them, the HTTP server (REST, health, metrics, OpenAPI), the interceptors
// every request passes through on both paths, and the one table that maps
// errors to gRPC status codes.
package api
