package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
)

// A realistic register: every patient has one decision, about three in
// ten a second (1.3 per patient), and one decision in twenty is a dissent.
// The plan is a pure function of the patient's index, so the final state
// of any patient can be checked after the load.
const (
	secondPercent  = 30
	dissentPercent = 5
)

var scrStates = []string{"implied_core", "consent_core", "consent_core_additional"}

// decision is one planned decision.
type decision struct {
	patient int // index into the patients slice
	pass    int // 0 the first decision, 1 the second
	kind    string
	state   string
	at      time.Time
}

func mix(p, pass int, salt string) uint32 {
	h := fnv.New32a()
	fmt.Fprintf(h, "%d/%d/%s", p, pass, salt)
	return h.Sum32()
}

// hasSecond reports whether patient p makes a second decision.
func hasSecond(p int) bool { return mix(p, 1, "second")%100 < secondPercent }

// epoch is when the planned decisions start: every decision is in the past.
var epoch = time.Date(2008, 6, 1, 9, 0, 0, 0, time.UTC)

// plan returns patient p's decision of the given pass. The first is an SCR
// decision; half the second decisions change the SCR decision later on,
// half object to secondary use.
func plan(p, pass int) decision {
	d := decision{patient: p, pass: pass, kind: "scr",
		at: epoch.Add(time.Duration(mix(p, 0, "at")%(24*3650)) * time.Hour)}
	if pass == 1 {
		// Always after the first, and in the past.
		d.at = d.at.Add(time.Duration(1+mix(p, 1, "at")%(24*2900)) * time.Hour)
		if mix(p, pass, "kind")%2 == 1 {
			d.kind = "gp_secondary_use"
		}
	}
	dissent := mix(p, pass, "dissent")%100 < dissentPercent
	switch {
	case dissent:
		d.state = "dissent"
	case d.kind == "scr":
		d.state = scrStates[mix(p, pass, "state")%uint32(len(scrStates))]
	default:
		d.state = "no_objection"
	}
	return d
}

// expectedSCR is patient p's current SCR state once the load is done.
func expectedSCR(p int) string {
	if hasSecond(p) {
		if d := plan(p, 1); d.kind == "scr" {
			return d.state
		}
	}
	return plan(p, 0).state
}

func (d decision) request(nhs []string) *consentv1.RecordDecisionRequest {
	return &consentv1.RecordDecisionRequest{
		NhsNumber:     nhs[d.patient],
		Kind:          d.kind,
		State:         d.state,
		EffectiveFrom: timestamppb.New(d.at),
		DecisionMaker: &consentv1.DecisionMaker{Type: "patient"},
		Channel:       "import",
		// Deterministic, so a retried write is recognised as a duplicate
		// rather than applied twice.
		RequestId: fmt.Sprintf("scale-%s-%d", nhs[d.patient], d.pass),
	}
}

// loadResult is what the load did.
type loadResult struct {
	Decisions int64
	Retries   int64
	Elapsed   time.Duration
}

// retryable are the codes after which a write's outcome is unknown or it
// was refused for now; resent with the same request ids, it is applied
// at most once.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}

// load writes every planned decision through target's gRPC API with conc
// writers: all first decisions, then all second ones (a patient's second
// decision never races its first). batch > 1 sends RecordDecisions calls
// of up to batch decisions; 1 sends one RecordDecision per decision.
func load(ctx context.Context, log *slog.Logger, target string, nhs []string, conc, batch int) (loadResult, error) {
	var res loadResult
	conns := make([]*grpc.ClientConn, min(conc, 8))
	for i := range conns {
		cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(16<<20), grpc.MaxCallRecvMsgSize(16<<20)))
		if err != nil {
			return res, err
		}
		defer cc.Close()
		conns[i] = cc
	}
	start := time.Now()
	var done, retries atomic.Int64
	stopProgress := make(chan struct{})
	var progress sync.WaitGroup
	progress.Add(1)
	go func() {
		defer progress.Done()
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				n := done.Load()
				log.Info("loading", "decisions", n, "per_second", int(float64(n)/time.Since(start).Seconds()), "retries", retries.Load())
			}
		}
	}()
	defer func() { close(stopProgress); progress.Wait() }()

	for pass := range 2 {
		var items []int
		for p := range nhs {
			if pass == 0 || hasSecond(p) {
				items = append(items, p)
			}
		}
		work := make(chan []int)
		errc := make(chan error, conc)
		var wg sync.WaitGroup
		for w := range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := consentv1.NewConsentServiceClient(conns[w%len(conns)])
				for chunk := range work {
					n, r, err := send(ctx, c, nhs, chunk, pass, batch)
					done.Add(n)
					retries.Add(r)
					if err != nil {
						errc <- err
						return
					}
				}
			}()
		}
		var sendErr error
	feed:
		for i := 0; i < len(items); i += batch {
			select {
			case work <- items[i:min(i+batch, len(items))]:
			case sendErr = <-errc:
				break feed
			case <-ctx.Done():
				sendErr = ctx.Err()
				break feed
			}
		}
		close(work)
		wg.Wait()
		if sendErr == nil {
			select {
			case sendErr = <-errc:
			default:
			}
		}
		if sendErr != nil {
			return res, sendErr
		}
	}
	res.Decisions, res.Retries, res.Elapsed = done.Load(), retries.Load(), time.Since(start)
	return res, nil
}

// send writes one chunk of patients' decisions of one pass, retrying what
// may be retried; it returns how many decisions were acknowledged.
func send(ctx context.Context, c consentv1.ConsentServiceClient, nhs []string, chunk []int, pass, batch int) (n, retries int64, err error) {
	reqs := make([]*consentv1.RecordDecisionRequest, len(chunk))
	for i, p := range chunk {
		reqs[i] = plan(p, pass).request(nhs)
	}
	if batch > 1 {
		// One raft entry for the chunk; a retry after an unknown outcome
		// replays what was applied as duplicates.
		err := retry(ctx, &retries, func(ctx context.Context) error {
			resp, err := c.RecordDecisions(ctx, &consentv1.RecordDecisionsRequest{Decisions: reqs})
			if err == nil && len(resp.GetResults()) != len(reqs) {
				return fmt.Errorf("%d results for %d decisions", len(resp.GetResults()), len(reqs))
			}
			return err
		})
		if err != nil {
			return 0, retries, fmt.Errorf("record batch from %s: %w", reqs[0].GetRequestId(), err)
		}
		return int64(len(reqs)), retries, nil
	}
	for _, r := range reqs {
		err := retry(ctx, &retries, func(ctx context.Context) error {
			_, err := c.RecordDecision(ctx, r)
			return err
		})
		if err != nil {
			return n, retries, fmt.Errorf("record %s: %w", r.GetRequestId(), err)
		}
		n++
	}
	return n, retries, nil
}

// retry calls f until it succeeds, fails for good, or ten tries are used.
func retry(ctx context.Context, retries *int64, f func(context.Context) error) error {
	backoff := 50 * time.Millisecond
	for try := 0; ; try++ {
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := f(c)
		cancel()
		if err == nil || !retryable(err) || try == 9 || ctx.Err() != nil {
			return err
		}
		*retries++
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}
