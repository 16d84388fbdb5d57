package api

import (
	"math"
	"net"
	"strconv"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/lmc-consent/consentd/pki"
)

// limiter is a token bucket per caller: a practice system stuck in a retry
// loop, or a stolen certificate scraping the register, slows only itself.
// The key is the verified identity (organisation and user); anonymous
// callers exist only on plain TCP, which is not limited.
type limiter struct {
	rate  float64 // tokens per second
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int, now func() time.Time) *limiter {
	return &limiter{rate: rate, burst: float64(burst), now: now, buckets: map[string]*bucket{}}
}

// take spends one token of key's bucket, or says how long until one is due.
func (l *limiter) take(key string) (ok bool, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.sweep(now)
	b, found := l.buckets[key]
	if !found {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// sweep forgets buckets that have refilled, so the map holds only callers
// active in the last minute or so.
func (l *limiter) sweep(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.last) > full {
			delete(l.buckets, k)
		}
	}
}

// limit refuses a caller over its rate with RESOURCE_EXHAUSTED and a
// RetryInfo; the gateway turns that into 429 with Retry-After. Node-to-node
// calls are not limited: throttling the leader's own peers would only turn
// load into unknown outcomes.
func (s *Server) limit(id pki.Identity) error {
	if s.limiter == nil || id.IsNode() {
		return nil
	}
	ok, wait := s.limiter.take(id.Org + "/" + id.Subject)
	if ok {
		return nil
	}
	const msg = "rate limit exceeded for this caller; retry later"
	st, err := status.New(codes.ResourceExhausted, msg).WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)})
	if err != nil {
		return status.Error(codes.ResourceExhausted, msg)
	}
	return st.Err()
}

// retryAfter is the Retry-After value (whole seconds, at least 1) of a
// status carrying RetryInfo, or "".
func retryAfter(st *status.Status) string {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return strconv.Itoa(max(1, int(math.Ceil(ri.GetRetryDelay().AsDuration().Seconds()))))
		}
	}
	return ""
}

// limitListener accepts at most n connections at once; the rest wait in the
// kernel's backlog until one closes.
func limitListener(ln net.Listener, n int) net.Listener {
	return &limitedListener{Listener: ln, sem: make(chan struct{}, n)}
}

type limitedListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitedListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
