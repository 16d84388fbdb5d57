package api

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

type serverMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newServerMetrics(reg *prometheus.Registry) (*serverMetrics, error) {
	m := &serverMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "consentd_api_requests_total", Help: "API requests by method and gRPC code (REST calls included).",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "consentd_api_request_seconds", Help: "API request latency by method.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"method"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("api: metrics: %w", err)
		}
	}
	return m, nil
}

// unaryInterceptors run, in this order, for every call: gRPC clients, REST
// through the gateway, and the peer service registered by the wiring.
func (s *Server) unaryInterceptors() []grpc.UnaryServerInterceptor {
	return []grpc.UnaryServerInterceptor{
		s.observe, // outermost, so it also counts what recoverPanics turns into Internal
		s.recoverPanics,
		s.defaultTimeout,
		s.authorise,
	}
}

// observe counts, times and logs (at debug) every call. The log names the
// patient only masked and never carries bodies or reasons.
func (s *Server) observe(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	took := time.Since(start)
	code := status.Code(err)
	s.metrics.requests.WithLabelValues(info.FullMethod, code.String()).Inc()
	s.metrics.latency.WithLabelValues(info.FullMethod).Observe(took.Seconds())
	if s.log.Enabled(ctx, slog.LevelDebug) {
		attrs := []any{"method", info.FullMethod, "via", via(ctx), "code", code.String(), "took", took}
		if r, ok := req.(interface{ GetNhsNumber() string }); ok {
			attrs = append(attrs, "nhs", maskNHS(r.GetNhsNumber()))
		}
		if r, ok := req.(interface{ GetNhsNumbers() []string }); ok {
			attrs = append(attrs, "numbers", len(r.GetNhsNumbers()))
		}
		if id := headerRequestID(ctx); id != "" {
			attrs = append(attrs, "request_id", id)
		} else if r, ok := req.(interface{ GetRequestId() string }); ok && r.GetRequestId() != "" {
			attrs = append(attrs, "request_id", r.GetRequestId())
		}
		s.log.DebugContext(ctx, "request", attrs...)
	}
	return resp, err
}

// maskNHS keeps enough of an NHS number to correlate log lines, not to
// identify the patient.
func maskNHS(n string) string {
	if len(n) != 10 {
		return "(malformed)"
	}
	return n[:3] + "****" + n[7:]
}

// via says which door a call came in by: the gateway dials over the
// in-process listener, everything else over TCP.
func via(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok {
		if _, internal := p.Addr.(pipeAddr); internal {
			return "rest"
		}
	}
	return "grpc"
}

func (s *Server) defaultTimeout(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.DefaultTimeout)
		defer cancel()
	}
	return handler(ctx, req)
}

func (s *Server) recoverPanics(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic in handler", "method", info.FullMethod, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, internalMessage)
		}
	}()
	return handler(ctx, req)
}

// pipeListener is an in-process listener: the gateway's connections to the
// gRPC server never touch the network.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	server, client := net.Pipe()
	select {
	case l.conns <- gatewayConn{server}:
		return client, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// gatewayConn marks the server end of a gateway connection with an address
// no other connection can have, so via can trust it.
type gatewayConn struct{ net.Conn }

func (gatewayConn) RemoteAddr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "internal-gateway" }
