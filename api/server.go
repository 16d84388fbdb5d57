package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/lmc-consent/consentd/audit"
	"github.com/lmc-consent/consentd/fsm"
	"github.com/lmc-consent/consentd/pki"
	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

// Config configures the API servers. New fills zero fields from
// DefaultConfig, so callers set only what they mean to change.
type Config struct {
	// GRPCAddr and HTTPAddr are listen addresses (host:port; port 0 picks one).
	GRPCAddr string
	HTTPAddr string
	// TLS puts both listeners on TLS and makes every API call name its
	// caller by client certificate (REST: /livez, /readyz and the OpenAPI
	// document excepted). Without it the API is plain TCP and every caller
	// anonymous; node.Config insists that is asked for (Insecure).
	TLS *pki.Source
	// AccessLog, if set, records every access to a patient's consent before
	// it happens; a log that cannot be written refuses the access unless it
	// was opened fail-open.
	AccessLog *audit.Log
	// Insecure: no TLS, every caller anonymous and allowed. Reported in
	// status and warned about at start.
	Insecure bool
	// MaxBodyBytes bounds a REST request body; larger is refused with 413.
	MaxBodyBytes int64
	// MaxCheckBatch bounds the numbers in one CheckConsents call.
	MaxCheckBatch int
	// MaxPageSize bounds ListDecisions pages (at most 1000); larger asks are
	// served at this size.
	MaxPageSize int
	// MaxClockSkew is how far ahead of this node's clock effective_from may
	// be. It may tighten fsm.MaxClockSkew, never loosen it: the register
	// checks that bound again.
	MaxClockSkew time.Duration
	// DefaultTimeout applies to requests that carry no deadline.
	DefaultTimeout time.Duration
	// ReadyTimeout bounds the read barrier /readyz tries.
	ReadyTimeout time.Duration
	// HTTP server timeouts; all set so a slow client cannot hold a
	// connection (slowloris).
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// MaxRecvMsgSize bounds a gRPC request message.
	MaxRecvMsgSize int
	// RateLimit is each authenticated caller's sustained requests per
	// second and RateBurst how many it may send at once; a negative
	// RateLimit turns limiting off. Plain TCP (no identities) is not limited.
	RateLimit float64
	RateBurst int
	// MaxConcurrentStreams bounds the calls in flight on one gRPC
	// connection; MaxConnections the open connections per listener.
	MaxConcurrentStreams uint32
	MaxConnections       int
	// Pprof serves Go's profiler at /debug/pprof/ on the HTTP listener
	// (behind a client certificate on TLS, like /metrics), for measuring
	// a node under load. Off by default: a profile costs CPU and shows
	// internals.
	Pprof bool
	// Version is reported by GetStatus.
	Version string
	Logger  *slog.Logger
	// Metrics is this node's registry, served at /metrics; never the
	// global default one.
	Metrics *prometheus.Registry
	// Now stamps recorded_at and bounds effective_from.
	Now func() time.Time
}

// maxPageSizeLimit caps MaxPageSize: one page is read in one transaction.
const maxPageSizeLimit = 1000

// DefaultConfig is the configuration consentd runs with unless told otherwise.
func DefaultConfig() Config {
	return Config{
		GRPCAddr: "127.0.0.1:9081",
		HTTPAddr: "127.0.0.1:8081",
		// A RecordDecisions batch of 1,000 is about 400 KiB of JSON.
		MaxBodyBytes:      1 << 20,
		MaxCheckBatch:     1000,
		MaxPageSize:       100,
		MaxClockSkew:      fsm.MaxClockSkew,
		DefaultTimeout:    10 * time.Second,
		ReadyTimeout:      time.Second,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxRecvMsgSize:    1 << 20,
		// A practice checks consent before each upload: tens per second at
		// surgery opening is normal, hundreds is a loop.
		RateLimit:            200,
		RateBurst:            400,
		MaxConcurrentStreams: 256,
		MaxConnections:       4096,
		Logger:               slog.New(slog.DiscardHandler),
		Metrics:              prometheus.NewRegistry(),
		Now:                  time.Now,
	}
}

// withDefaults fills zero fields (addresses excepted) from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	orDefault(&c.MaxBodyBytes, d.MaxBodyBytes)
	orDefault(&c.MaxCheckBatch, d.MaxCheckBatch)
	orDefault(&c.MaxPageSize, d.MaxPageSize)
	orDefault(&c.MaxClockSkew, d.MaxClockSkew)
	orDefault(&c.DefaultTimeout, d.DefaultTimeout)
	orDefault(&c.ReadyTimeout, d.ReadyTimeout)
	orDefault(&c.ReadHeaderTimeout, d.ReadHeaderTimeout)
	orDefault(&c.ReadTimeout, d.ReadTimeout)
	orDefault(&c.WriteTimeout, d.WriteTimeout)
	orDefault(&c.IdleTimeout, d.IdleTimeout)
	orDefault(&c.MaxRecvMsgSize, d.MaxRecvMsgSize)
	orDefault(&c.RateLimit, d.RateLimit)
	orDefault(&c.RateBurst, d.RateBurst)
	orDefault(&c.MaxConcurrentStreams, d.MaxConcurrentStreams)
	orDefault(&c.MaxConnections, d.MaxConnections)
	orDefault(&c.Logger, d.Logger)
	orDefault(&c.Metrics, d.Metrics)
	if c.Now == nil {
		c.Now = d.Now
	}
	return c
}

func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Validate reports every missing or bad setting.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("api: "+format, args...)) }
	for _, a := range []struct{ name, addr string }{{"GRPCAddr", c.GRPCAddr}, {"HTTPAddr", c.HTTPAddr}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			bad("%s %q: %v", a.name, a.addr, err)
		}
	}
	if c.MaxBodyBytes < 1<<10 {
		bad("MaxBodyBytes %d: must be at least 1 KiB", c.MaxBodyBytes)
	}
	if c.MaxCheckBatch < 1 {
		bad("MaxCheckBatch %d: must be positive", c.MaxCheckBatch)
	}
	if c.MaxPageSize < 1 || c.MaxPageSize > maxPageSizeLimit {
		bad("MaxPageSize %d: must be 1..%d", c.MaxPageSize, maxPageSizeLimit)
	}
	if c.MaxClockSkew <= 0 || c.MaxClockSkew > fsm.MaxClockSkew {
		bad("MaxClockSkew %v: must be positive and at most %v (the register's bound)", c.MaxClockSkew, fsm.MaxClockSkew)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"DefaultTimeout", c.DefaultTimeout}, {"ReadyTimeout", c.ReadyTimeout}, {"ReadHeaderTimeout", c.ReadHeaderTimeout},
		{"ReadTimeout", c.ReadTimeout}, {"WriteTimeout", c.WriteTimeout}, {"IdleTimeout", c.IdleTimeout}} {
		if d.v <= 0 {
			bad("%s %v: must be positive", d.name, d.v)
		}
	}
	if c.MaxRecvMsgSize < 1<<10 {
		bad("MaxRecvMsgSize %d: must be at least 1 KiB", c.MaxRecvMsgSize)
	}
	if c.TLS != nil && c.Insecure {
		bad("TLS and Insecure are exclusive")
	}
	if c.RateLimit > 0 && c.RateBurst < 1 {
		bad("RateBurst %d: must be at least 1 when RateLimit is on", c.RateBurst)
	}
	if c.MaxConnections < 1 {
		bad("MaxConnections %d: must be at least 1", c.MaxConnections)
	}
	if c.Logger == nil {
		bad("Logger is required")
	}
	if c.Metrics == nil {
		bad("Metrics registry is required")
	}
	if c.Now == nil {
		bad("Now is required")
	}
	return errors.Join(errs...)
}

// Server serves the public gRPC API and the REST gateway in front of it.
type Server struct {
	cfg     Config
	log     *slog.Logger
	reg     Register
	cl      Cluster
	metrics *serverMetrics
	limiter *limiter // nil when rate limiting is off
	grpc    *grpc.Server
	// gwGRPC serves the same services, with the same interceptors, on
	// internal: the in-process listener the gateway dials. It is separate
	// from grpc only because that one speaks TLS and this one need not.
	gwGRPC   *grpc.Server
	internal *pipeListener
	gwConn   *grpc.ClientConn
	http     *http.Server
	grpcLn   net.Listener
	httpLn   net.Listener
	wg       sync.WaitGroup
}

// New builds the servers without binding anything; Start binds and serves.
func New(cfg Config, reg Register, cl Cluster) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if reg == nil || cl == nil {
		return nil, errors.New("api: a Register and a Cluster are required")
	}
	s := &Server{cfg: cfg, log: cfg.Logger, reg: reg, cl: cl, internal: newPipeListener()}
	if cfg.RateLimit > 0 {
		s.limiter = newLimiter(cfg.RateLimit, cfg.RateBurst, cfg.Now)
	}
	var err error
	if s.metrics, err = newServerMetrics(cfg.Metrics); err != nil {
		return nil, err
	}
	newServer := func(extra ...grpc.ServerOption) *grpc.Server {
		g := grpc.NewServer(append([]grpc.ServerOption{
			grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
			grpc.ConnectionTimeout(10 * time.Second),
			grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
			grpc.ChainUnaryInterceptor(s.unaryInterceptors()...),
			grpc.ChainStreamInterceptor(s.authoriseStream),
		}, extra...)...)
		consentv1.RegisterConsentServiceServer(g, &consentService{s: s})
		consentv1.RegisterClusterServiceServer(g, &clusterService{s: s})
		consentv1.RegisterAuditServiceServer(g, &auditService{s: s})
		reflection.Register(g)
		return g
	}
	if cfg.TLS != nil {
		s.grpc = newServer(grpc.Creds(credentials.NewTLS(cfg.TLS.ServerConfig(true, nil))))
	} else {
		s.grpc = newServer()
	}
	s.gwGRPC = newServer()

	// The gateway is a gRPC client of this very server, never a direct
	// caller of the handlers (Register*HandlerServer would skip interceptors).
	s.gwConn, err = grpc.NewClient("passthrough:///internal-gateway",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return s.internal.dial(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("api: gateway connection: %w", err)
	}
	gw, err := s.gatewayMux()
	if err != nil {
		s.gwConn.Close()
		return nil, err
	}
	s.http = &http.Server{
		Handler:           s.httpHandler(gw),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// GRPCServer lets the wiring register node-to-node services before Start.
func (s *Server) GRPCServer() *grpc.Server { return s.grpc }

// Start binds both listeners and serves in the background.
func (s *Server) Start() error {
	grpcLn, err := net.Listen("tcp", s.cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("api: grpc listen: %w", err)
	}
	httpLn, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		grpcLn.Close()
		return fmt.Errorf("api: http listen: %w", err)
	}
	// Limited below TLS: net/http must still see a *tls.Conn to fill r.TLS.
	grpcLn, httpLn = limitListener(grpcLn, s.cfg.MaxConnections), limitListener(httpLn, s.cfg.MaxConnections)
	if s.cfg.TLS != nil {
		// A certificate is optional at the handshake so that probes reach
		// /livez and /readyz; every API call still needs one.
		cfg := s.cfg.TLS.ServerConfig(false, nil)
		cfg.NextProtos = []string{"h2", "http/1.1"}
		httpLn = tls.NewListener(httpLn, cfg)
	}
	s.grpcLn, s.httpLn = grpcLn, httpLn
	if s.cfg.Insecure {
		s.log.Warn("API served without TLS (insecure)", "grpc", grpcLn.Addr().String(), "http", httpLn.Addr().String())
	}
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		if err := s.grpc.Serve(grpcLn); err != nil {
			s.log.Error("grpc server stopped", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := s.gwGRPC.Serve(s.internal); err != nil {
			s.log.Error("gateway's grpc server stopped", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	}()
	return nil
}

// GRPCAddr is the bound gRPC address (valid after Start).
func (s *Server) GRPCAddr() string { return s.grpcLn.Addr().String() }

// HTTPAddr is the bound REST address (valid after Start).
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// then stops hard. REST goes first: its requests are gRPC calls in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); s.gwGRPC.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		s.gwGRPC.Stop()
		<-done
		if err == nil {
			err = ctx.Err()
		}
	}
	s.gwConn.Close()
	s.internal.Close()
	s.http.Close()
	s.wg.Wait()
	return err
}

func (s *Server) gatewayMux() (*runtime.ServeMux, error) {
	marshaler := strictJSON{&runtime.JSONPb{
		MarshalOptions: protojson.MarshalOptions{UseProtoNames: false, EmitUnpopulated: true},
		// An unknown field is refused, not dropped: a misspelt
		// expectedVersion must not turn into an unconditional write.
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}}
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, marshaler),
		runtime.WithIncomingHeaderMatcher(func(h string) (string, bool) {
			if strings.EqualFold(h, "X-Request-ID") {
				return requestIDHeader, true
			}
			key, ok := runtime.DefaultHeaderMatcher(h)
			// Identity is the node's to state, never a REST client's.
			if ok && strings.HasPrefix(strings.ToLower(key), reservedPrefix) {
				return "", false
			}
			return key, ok
		}),
		runtime.WithMetadata(s.gatewayIdentity),
		runtime.WithErrorHandler(gatewayError),
	)
	ctx := context.Background()
	if err := consentv1.RegisterConsentServiceHandler(ctx, mux, s.gwConn); err != nil {
		return nil, err
	}
	if err := consentv1.RegisterClusterServiceHandler(ctx, mux, s.gwConn); err != nil {
		return nil, err
	}
	if err := consentv1.RegisterAuditServiceHandler(ctx, mux, s.gwConn); err != nil {
		return nil, err
	}
	return mux, nil
}

// strictJSON decodes a request body as exactly one JSON message: JSONPb's
// streaming decoder would silently ignore whatever follows the first value.
type strictJSON struct{ *runtime.JSONPb }

func (m strictJSON) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		b, err := io.ReadAll(r) // already bounded by limitBody
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(b)) == 0 {
			return io.EOF // the gateway's "no body"
		}
		msg, ok := v.(proto.Message)
		if !ok {
			return m.Unmarshal(b, v)
		}
		return m.UnmarshalOptions.Unmarshal(b, msg)
	})
}

// JSON decoding errors name the field only in their text; these pull it out.
var jsonFieldErrors = []*regexp.Regexp{
	regexp.MustCompile(`unknown field "([^"]*)"`),
	regexp.MustCompile(`duplicate field "([^"]*)"`),
	regexp.MustCompile(`invalid value for \S+ field (\S+):`),
}

// gatewayError makes the gateway's own errors (decoding, routing) safe to
// marshal and names the field at fault, then writes the default
// {code, message, details} body.
func gatewayError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if st, ok := status.FromError(err); ok {
		if ra := retryAfter(st); ra != "" {
			w.Header().Set("Retry-After", ra)
		}
	}
	if st, ok := status.FromError(err); ok && len(st.Details()) == 0 {
		st = status.New(st.Code(), validUTF8(st.Message()))
		if st.Code() == codes.InvalidArgument {
			for _, re := range jsonFieldErrors {
				if sub := re.FindStringSubmatch(st.Message()); sub != nil {
					st = withViolation(st, sub[1], st.Message())
					break
				}
			}
		}
		err = st.Err()
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

func (s *Server) httpHandler(gw http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/", s.limitBody(checkRequestIDHeader(checkURLText(gw))))
	mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(consentv1.OpenAPI)
	})
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.requireRole(nil, promhttp.HandlerFor(s.cfg.Metrics, promhttp.HandlerOpts{})))
	if s.cfg.Pprof {
		// Profiles and goroutine dumps show a node's internals: LMC
		// administrators only, as Vault keeps its pprof behind sudo.
		admin := []pki.Role{pki.RoleLMCAdmin}
		mux.Handle("/debug/pprof/", s.requireRole(admin, http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/cmdline", s.requireRole(admin, http.HandlerFunc(pprof.Cmdline)))
		mux.Handle("/debug/pprof/profile", s.requireRole(admin, http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/symbol", s.requireRole(admin, http.HandlerFunc(pprof.Symbol)))
		mux.Handle("/debug/pprof/trace", s.requireRole(admin, http.HandlerFunc(pprof.Trace)))
	}
	return mux
}

// requireRole refuses, on TLS, callers without a client certificate of
// this cluster (401) and, when roles is not nil, callers with another role
// (403). On plain TCP (--insecure) everyone is anonymous and allowed.
func (s *Server) requireRole(roles []pki.Role, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.TLS != nil {
			var id pki.Identity
			ok := r.TLS != nil
			if ok {
				id, ok = s.cfg.TLS.PeerIdentity(*r.TLS)
			}
			if !ok {
				writeStatus(w, http.StatusUnauthorized, status.New(codes.Unauthenticated, "a client certificate is required"))
				return
			}
			if roles != nil && !slices.Contains(roles, id.Role) {
				writeStatus(w, http.StatusForbidden, status.Newf(codes.PermissionDenied, "role %q may not use %s", id.Role, r.URL.Path))
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// readyz is 200 only when a linearizable read can be served now.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadyTimeout)
	defer cancel()
	idx, err := s.cl.LinearizableRead(ctx)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "reason": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "readIndex": strconv.FormatUint(idx, 10)})
}

func writeJSON(w http.ResponseWriter, code int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"code":13,"message":"internal error","details":[]}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(b)
}

// writeStatus answers from the HTTP layer in the gateway's error shape.
func writeStatus(w http.ResponseWriter, httpCode int, st *status.Status) {
	b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(st.Proto())
	if err != nil {
		httpCode, b = http.StatusInternalServerError, []byte(`{"code":13,"message":"internal error","details":[]}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpCode)
	w.Write(b)
}

// checkRequestIDHeader refuses an X-Request-ID that cannot become gRPC
// metadata: the gateway would drop it and the node would generate a new
// id, so a client's retry would record the decision twice.
func checkRequestIDHeader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vals := r.Header.Values("X-Request-ID")
		bad := ""
		switch {
		case len(vals) > 1:
			bad = "X-Request-ID is given more than once"
		case len(vals) == 1 && strings.IndexFunc(vals[0], func(c rune) bool { return c < 0x20 || c > 0x7e }) >= 0:
			bad = "X-Request-ID must be printable ASCII"
		}
		if bad != "" {
			writeStatus(w, http.StatusBadRequest, withViolation(status.New(codes.InvalidArgument, "request_id: "+bad), "request_id", bad))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkURLText refuses a path or query that is not valid UTF-8 once
// unescaped: the gateway would copy it into a protobuf string field, which
// cannot be marshalled, and the caller would get a 500 (found by fuzzing).
func checkURLText(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bad := ""
		if !utf8.ValidString(r.URL.Path) {
			bad = "the URL path is not valid UTF-8"
		} else if q, err := url.ParseQuery(r.URL.RawQuery); err == nil {
			for k, vs := range q {
				if !utf8.ValidString(k) {
					bad = "a query parameter name is not valid UTF-8"
				}
				for _, v := range vs {
					if !utf8.ValidString(v) {
						bad = "query parameter " + strconv.Quote(validUTF8(k)) + " is not valid UTF-8"
					}
				}
			}
		}
		if bad != "" {
			writeStatus(w, http.StatusBadRequest, status.New(codes.InvalidArgument, bad))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitBody reads the whole body up front so an oversized one is refused
// with 413 before anything reaches the gateway.
func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		max := s.cfg.MaxBodyBytes
		if r.ContentLength > max {
			tooLarge(w, max)
			return
		}
		b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
		if err != nil {
			writeStatus(w, http.StatusBadRequest, status.New(codes.InvalidArgument, "could not read the request body"))
			return
		}
		if int64(len(b)) > max {
			tooLarge(w, max)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
		next.ServeHTTP(w, r)
	})
}

func tooLarge(w http.ResponseWriter, max int64) {
	w.Header().Set("Connection", "close")
	writeStatus(w, http.StatusRequestEntityTooLarge, status.Newf(codes.ResourceExhausted, "request body exceeds %d bytes", max))
}
