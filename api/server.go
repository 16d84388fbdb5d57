package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/lmc-consent/consentd/fsm"
	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

// Register is the read side of the register; fsm.Store satisfies it.
type Register interface {
	GetConsents(nhs string) (uint64, []fsm.Consent, error)
	CheckConsents(kind string, nhs []string) (uint64, []fsm.CheckResult, error)
	ListDecisions(nhs, kind string, after uint64, limit int) (uint64, []*commandv1.DecisionRecord, uint64, error)
	Digest() (uint64, string, error)
	AppliedIndex() uint64
}

// Cluster routes writes and linearizable reads; cluster.Cluster satisfies it.
type Cluster interface {
	NodeID() string
	Apply(ctx context.Context, cmd []byte) (*commandv1.Result, error)
	LinearizableRead(ctx context.Context) (uint64, error)
	StaleInfo() (knownCommit uint64, sinceLeaderContact time.Duration)
	Status(ctx context.Context) (*consentv1.GetStatusResponse, error)
	AddMember(ctx context.Context, req *consentv1.AddMemberRequest) error
	RemoveMember(ctx context.Context, id string) error
}

// Config configures the API servers.
type Config struct {
	GRPCAddr string
	HTTPAddr string
	// Insecure: no TLS. Reported in status and warned about at start.
	Insecure          bool
	MaxBodyBytes      int64         // default 64 KiB
	MaxCheckBatch     int           // default 1000
	MaxPageSize       int           // default 1000
	DefaultTimeout    time.Duration // for requests without a deadline; default 10s
	ReadyTimeout      time.Duration // default 1s
	ReadHeaderTimeout time.Duration // default 5s
	ReadTimeout       time.Duration // default 15s
	WriteTimeout      time.Duration // default 30s
	IdleTimeout       time.Duration // default 2m
	MaxRecvMsgSize    int           // default 1 MiB
	Version           string
	Logger            *slog.Logger
	// Metrics is this node's registry; never the global one.
	Metrics *prometheus.Registry
	Now     func() time.Time
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 64 << 10
	}
	if c.MaxCheckBatch == 0 {
		c.MaxCheckBatch = 1000
	}
	if c.MaxPageSize == 0 {
		c.MaxPageSize = 1000
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = 10 * time.Second
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = time.Second
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = 5 * time.Second
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 15 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 2 * time.Minute
	}
	if c.MaxRecvMsgSize == 0 {
		c.MaxRecvMsgSize = 1 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = prometheus.NewRegistry()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports a missing or bad setting.
func (c Config) Validate() error {
	var errs []error
	for name, a := range map[string]string{"GRPCAddr": c.GRPCAddr, "HTTPAddr": c.HTTPAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("api: %s %q: %w", name, a, err))
		}
	}
	if c.MaxCheckBatch < 1 || c.MaxPageSize < 1 || c.MaxBodyBytes < 1024 {
		errs = append(errs, errors.New("api: limits must be positive (MaxBodyBytes at least 1 KiB)"))
	}
	return errors.Join(errs...)
}

// Server serves the public gRPC API and the REST gateway in front of it.
type Server struct {
	cfg  Config
	log  *slog.Logger
	reg  Register
	cl   Cluster
	grpc *grpc.Server
	http *http.Server
	// internal is the in-process listener the gateway dials, so REST
	// requests pass through the same interceptors as gRPC ones.
	internal *pipeListener
	gwConn   *grpc.ClientConn
	grpcLn   net.Listener
	httpLn   net.Listener
	metrics  *serverMetrics
	wg       sync.WaitGroup
}

// New builds the servers; Start binds and serves them.
func New(cfg Config, reg Register, cl Cluster) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, reg: reg, cl: cl, internal: newPipeListener()}
	s.metrics = newServerMetrics(cfg.Metrics)
	s.grpc = grpc.NewServer(
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.ConnectionTimeout(10*time.Second),
		grpc.ChainUnaryInterceptor(s.recoverPanics, s.observe, s.defaultTimeout),
	)
	consentv1.RegisterConsentServiceServer(s.grpc, &consentService{s: s})
	consentv1.RegisterClusterServiceServer(s.grpc, &clusterService{s: s})
	reflection.Register(s.grpc)
	return s, nil
}

// GRPCServer lets the wiring register node-to-node services before Start.
func (s *Server) GRPCServer() *grpc.Server { return s.grpc }

// Start binds both listeners and serves in the background.
func (s *Server) Start() error {
	var err error
	if s.grpcLn, err = net.Listen("tcp", s.cfg.GRPCAddr); err != nil {
		return fmt.Errorf("api: grpc listen: %w", err)
	}
	if s.httpLn, err = net.Listen("tcp", s.cfg.HTTPAddr); err != nil {
		s.grpcLn.Close()
		return fmt.Errorf("api: http listen: %w", err)
	}
	s.gwConn, err = grpc.NewClient("passthrough:///internal",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return s.internal.dial(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("api: gateway connection: %w", err)
	}
	mux, err := s.gatewayMux()
	if err != nil {
		return err
	}
	s.http = &http.Server{
		Handler:           s.httpHandler(mux),
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.cfg.Insecure {
		s.log.Warn("API served without TLS", "grpc", s.grpcLn.Addr().String(), "http", s.httpLn.Addr().String())
	}
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.grpc.Serve(s.grpcLn) }()
	go func() { defer s.wg.Done(); s.grpc.Serve(s.internal) }()
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	}()
	return nil
}

// GRPCAddr is the bound gRPC address.
func (s *Server) GRPCAddr() string { return s.grpcLn.Addr().String() }

// HTTPAddr is the bound REST address.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// then stops hard.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	if s.http != nil {
		if herr := s.http.Shutdown(ctx); herr != nil && !errors.Is(herr, context.Canceled) {
			err = herr
		}
	}
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
	if s.gwConn != nil {
		s.gwConn.Close()
	}
	s.internal.Close()
	if s.http != nil {
		s.http.Close()
	}
	s.wg.Wait()
	return err
}

func (s *Server) gatewayMux() (*runtime.ServeMux, error) {
	marshaler := &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, marshaler),
		runtime.WithIncomingHeaderMatcher(func(h string) (string, bool) {
			if strings.EqualFold(h, "X-Request-ID") {
				return "x-request-id", true
			}
			return runtime.DefaultHeaderMatcher(h)
		}),
		runtime.WithErrorHandler(s.gatewayError),
	)
	ctx := context.Background()
	if err := consentv1.RegisterConsentServiceHandler(ctx, mux, s.gwConn); err != nil {
		return nil, err
	}
	if err := consentv1.RegisterClusterServiceHandler(ctx, mux, s.gwConn); err != nil {
		return nil, err
	}
	return mux, nil
}

// gatewayError reports JSON decoding problems as 400 naming the problem,
// then defers to the default handler for everything else.
func (s *Server) gatewayError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if _, ok := status.FromError(err); !ok {
		err = status.Error(codes.InvalidArgument, err.Error())
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

func (s *Server) httpHandler(gw http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/", s.limitBody(gw))
	mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(consentv1.OpenAPI)
	})
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, `{"status":"ok"}`)
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Metrics, promhttp.HandlerOpts{}))
	return mux
}

// readyz is 200 only when a linearizable read can be served now.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadyTimeout)
	defer cancel()
	idx, err := s.cl.LinearizableRead(ctx)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, fmt.Sprintf(`{"status":"unavailable","reason":%s}`, strconv.Quote(err.Error())))
		return
	}
	writeJSON(w, http.StatusOK, fmt.Sprintf(`{"status":"ready","readIndex":"%d"}`, idx))
}

func writeJSON(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	io.WriteString(w, body)
}

// limitBody reads the whole body up front so an oversized one is refused
// with 413 before anything reaches a handler.
func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			max := s.cfg.MaxBodyBytes
			if r.ContentLength > max {
				tooLarge(w, max)
				return
			}
			b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
			if err != nil {
				writeJSON(w, http.StatusBadRequest, `{"code":3,"message":"could not read request body","details":[]}`)
				return
			}
			if int64(len(b)) > max {
				tooLarge(w, max)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		next.ServeHTTP(w, r)
	})
}

func tooLarge(w http.ResponseWriter, max int64) {
	writeJSON(w, http.StatusRequestEntityTooLarge,
		fmt.Sprintf(`{"code":8,"message":"request body exceeds %d bytes","details":[]}`, max))
}
