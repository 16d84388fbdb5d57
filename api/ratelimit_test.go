package api

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestLimiterBucket(t *testing.T) {
	now := time.Unix(0, 0)
	l := newLimiter(2, 3, func() time.Time { return now })
	for i := 0; i < 3; i++ {
		if ok, _ := l.take("a"); !ok {
			t.Fatalf("burst request %d refused", i)
		}
	}
	ok, wait := l.take("a")
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("over the burst: ok=%v wait=%v, want refused for 500ms", ok, wait)
	}
	if ok, _ := l.take("b"); !ok {
		t.Fatal("another caller paid for a's burst")
	}
	now = now.Add(500 * time.Millisecond)
	if ok, _ := l.take("a"); !ok {
		t.Fatal("a token did not come back after 1/rate")
	}
	now = now.Add(time.Hour)
	l.take("b")
	if _, kept := l.buckets["a"]; kept {
		t.Fatal("an idle caller's bucket was not forgotten")
	}
}

// TestRateLimitPerCaller: a caller over its rate gets 429 with Retry-After
// and its write is not applied; another caller is not affected.
func TestRateLimitPerCaller(t *testing.T) {
	w := newTLSWorldWith(t, func(c *Config) { c.RateLimit, c.RateBurst = 0.5, 2 })
	body := func(id string) string {
		return `{"kind":"scr","state":"dissent","channel":"in_person","decisionMaker":{"type":"patient"},"requestId":"` + id + `"}`
	}
	for i, id := range []string{"r1", "r2"} {
		if got := w.rest("practice-a", "POST", recordPath(patient), body(id)); got.code != 200 {
			t.Fatalf("request %d within the burst: %d %s", i, got.code, got.raw)
		}
	}
	applies, _, _ := w.h.fake.counts()
	got := w.restResp("practice-a", "POST", recordPath(patient), body("r3"))
	// 1/rate is 2s, less whatever refilled since the burst: "2", or "1" on
	// a slow machine.
	if ra := got.Header.Get("Retry-After"); got.StatusCode != http.StatusTooManyRequests || (ra != "2" && ra != "1") {
		t.Fatalf("over the limit: %d Retry-After %q", got.StatusCode, got.Header.Get("Retry-After"))
	}
	if now, _, _ := w.h.fake.counts(); now != applies {
		t.Fatal("a rate-limited write was applied")
	}
	if got := w.rest("practice-b", "POST", recordPath(patient), body("b1")); got.code != 200 {
		t.Fatalf("another practice limited by the first: %d %s", got.code, got.raw)
	}
	if got := w.rest("auditor", "GET", "/v1/audit/access?org=Y00001", ""); got.code != 200 || !strings.Contains(string(got.raw), "ResourceExhausted") {
		t.Fatalf("the refusal is not in the access log: %d %s", got.code, got.raw)
	}
}
