package jepsen

import (
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

func TestNftScript(t *testing.T) {
	got := nftScript("cj77", NodeRules{Blocked: []string{"10.213.77.13", "10.213.77.12"}})
	want := `table inet cj77
delete table inet cj77
table inet cj77 {
	set blocked {
		type ipv4_addr
		elements = { 10.213.77.12, 10.213.77.13 }
	}
	set lossy {
		type ipv4_addr
	}
	set starved {
		type ipv4_addr
	}
	chain input {
		type filter hook input priority -10; policy accept;
		ip saddr @blocked counter drop
	}
}
`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	loss := nftScript("cj77", NodeRules{Lossy: []string{"10.213.77.12"}, LossPercent: 25})
	if !strings.Contains(loss, "ip saddr @lossy numgen random mod 100 < 25 counter drop") ||
		!strings.Contains(loss, "elements = { 10.213.77.12 }") {
		t.Fatal(loss)
	}
	if strings.Contains(loss, "reject") || strings.Contains(got, "reject") {
		t.Fatal("partitions must drop, not reject")
	}
	starve := nftScript("cj77", NodeRules{Starved: []string{"10.213.77.11"}, StarvePort: 7081, StarveAbove: 320})
	if !strings.Contains(starve, "ip saddr @starved tcp dport 7081 meta length <= 320 counter\n") ||
		!strings.Contains(starve, "ip saddr @starved tcp dport 7081 meta length > 320 counter drop") ||
		!strings.Contains(starve, "elements = { 10.213.77.11 }") {
		t.Fatal(starve)
	}
	// Both rules are needed: without a port or a size nothing is starved.
	for _, r := range []NodeRules{{Starved: []string{"10.213.77.11"}, StarveAbove: 320}, {Starved: []string{"10.213.77.11"}, StarvePort: 7081}} {
		if s := nftScript("cj77", r); strings.Contains(s, "meta length") {
			t.Fatalf("%+v rendered a starve rule:\n%s", r, s)
		}
	}
	healed := nftScript("cj77", NodeRules{})
	if strings.Contains(healed, "elements") || strings.Contains(healed, "numgen") || strings.Contains(healed, "meta length") {
		t.Fatal(healed)
	}
}

func TestRulesForNeverBlockTheController(t *testing.T) {
	nodes := []string{"n1", "n2", "n3"}
	ips := map[string]string{"n1": "10.0.0.11", "n2": "10.0.0.12", "n3": "10.0.0.13"}
	g := Grudge{}
	g.cut("n1", "n2")
	g.drop("n3", "n1")
	rules := rulesFor(nodes, ips, g, 0)
	if !reflect.DeepEqual(rules["n1"].Blocked, []string{"10.0.0.12"}) || !reflect.DeepEqual(rules["n3"].Blocked, []string{"10.0.0.11"}) {
		t.Fatalf("%+v", rules)
	}
	if len(rules["n2"].Blocked) != 1 || rules["n2"].LossPercent != 0 {
		t.Fatalf("%+v", rules["n2"])
	}
	lossy := rulesFor(nodes, ips, Grudge{}, 20)
	for _, n := range nodes {
		r := lossy[n]
		if r.LossPercent != 20 || len(r.Lossy) != 2 || len(r.Blocked) != 0 {
			t.Fatalf("%s: %+v", n, r)
		}
		for _, a := range r.Lossy {
			if a == ips[n] {
				t.Fatalf("%s drops its own packets", n)
			}
		}
	}
}

// reach reports whether b receives packets from a under g.
func reach(g Grudge, a, b string) bool {
	for _, x := range g[b] {
		if x == a {
			return false
		}
	}
	return true
}

func TestPlanPartition(t *testing.T) {
	nodes3 := []string{"n1", "n2", "n3"}
	nodes5 := []string{"n1", "n2", "n3", "n4", "n5"}
	for seed := int64(0); seed < 50; seed++ {
		g, targets := PlanPartition(PartitionLeader, nodes3, "n2", stepRand(seed, 0))
		if !reflect.DeepEqual(targets, []string{"n2"}) || reach(g, "n2", "n1") || reach(g, "n1", "n2") || !reach(g, "n1", "n3") {
			t.Fatalf("leader: %v %s", targets, g)
		}
		g, targets = PlanPartition(PartitionFollower, nodes3, "n2", stepRand(seed, 1))
		if len(targets) != 1 || targets[0] == "n2" || reach(g, targets[0], "n2") {
			t.Fatalf("follower: %v %s", targets, g)
		}
		for _, nodes := range [][]string{nodes3, nodes5} {
			g, minority := PlanPartition(PartitionMajority, nodes, "n1", stepRand(seed, 2))
			if len(minority) != (len(nodes)-1)/2 {
				t.Fatalf("majority: minority %v of %d", minority, len(nodes))
			}
			in := map[string]bool{}
			for _, m := range minority {
				in[m] = true
			}
			for _, a := range nodes {
				for _, b := range nodes {
					if a != b && reach(g, a, b) != (in[a] == in[b]) {
						t.Fatalf("majority %v: %s→%s wrong in %s", minority, a, b, g)
					}
				}
			}

			g, bridge := PlanPartition(PartitionBridge, nodes, "n1", stepRand(seed, 3))
			b := bridge[0]
			if b == "n1" {
				t.Fatal("bridge is the leader")
			}
			cut := 0
			for _, x := range nodes {
				if x != b && (!reach(g, x, b) || !reach(g, b, x)) {
					t.Fatalf("bridge %s cut from %s: %s", b, x, g)
				}
				for _, y := range nodes {
					if x < y && !reach(g, x, y) {
						cut++
					}
				}
			}
			if cut == 0 || reach(g, "n1", firstCut(g, "n1")) {
				t.Fatalf("bridge cuts nothing from the leader: %s", g)
			}
		}
		g, _ = PlanPartition(PartitionOneWay, nodes3, "n3", stepRand(seed, 4))
		toLeader, fromLeader := !reach(g, "n1", "n3") && !reach(g, "n2", "n3"), !reach(g, "n3", "n1") && !reach(g, "n3", "n2")
		if toLeader == fromLeader {
			t.Fatalf("one-way must cut exactly one direction: %s", g)
		}
	}
}

func firstCut(g Grudge, n string) string {
	if len(g[n]) == 0 {
		return ""
	}
	return g[n][0]
}

func TestGenerateSchedule(t *testing.T) {
	sc, _ := LookupScenario("mixed")
	cfg := ScheduleConfig{Duration: 60 * time.Second, ElectionTimeout: 500 * time.Millisecond}
	a, b := GenerateSchedule(42, sc, cfg), GenerateSchedule(42, sc, cfg)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different schedules")
	}
	if reflect.DeepEqual(a, GenerateSchedule(43, sc, cfg)) {
		t.Fatal("different seeds, same schedule")
	}
	allowed := map[Fault]bool{}
	for _, f := range sc.Faults {
		allowed[f.Fault] = true
	}
	seen := map[Fault]bool{}
	for seed := int64(0); seed < 40; seed++ {
		steps := GenerateSchedule(seed, sc, cfg)
		if len(steps) < 3 {
			t.Fatalf("seed %d: only %d steps in a minute", seed, len(steps))
		}
		var end time.Duration
		for i, st := range steps {
			seen[st.Fault] = true
			if !allowed[st.Fault] {
				t.Fatalf("seed %d step %d: %s not in the scenario", seed, i, st.Fault)
			}
			if st.At < end+2*time.Second {
				t.Fatalf("seed %d step %d starts %v, before the previous heal + gap (%v)", seed, i, st.At, end)
			}
			end = st.At + st.Hold
			if end > cfg.Duration {
				t.Fatalf("seed %d step %d ends after the duration", seed, i)
			}
			if (st.Fault == PauseLeader || st.Fault == PauseFollower) && st.Hold < 4*cfg.ElectionTimeout {
				t.Fatalf("pause of %v is not past the election timeout", st.Hold)
			}
			if st.Fault == Loss && (st.LossPercent < 10 || st.LossPercent > 35) {
				t.Fatalf("loss %d%%", st.LossPercent)
			}
		}
	}
	var missing []string
	for f := range allowed {
		if !seen[f] {
			missing = append(missing, string(f))
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("40 seeds never scheduled %v", missing)
	}
	for _, sc := range Scenarios() {
		if !sc.NeedsLeaderChange {
			continue
		}
		for seed := int64(0); seed < 40; seed++ {
			short := GenerateSchedule(seed, sc, ScheduleConfig{Duration: 15 * time.Second, ElectionTimeout: 500 * time.Millisecond})
			forced := false
			for _, st := range short {
				forced = forced || st.Fault.replacesLeader()
			}
			hasOne := false
			for _, wf := range sc.Faults {
				hasOne = hasOne || wf.Fault.replacesLeader()
			}
			if hasOne && len(short) > 0 && !forced {
				t.Fatalf("%s seed %d: no fault that replaces the leader in %v", sc.Name, seed, short)
			}
		}
	}
	none, _ := LookupScenario("none")
	if s := GenerateSchedule(1, none, cfg); len(s) != 0 {
		t.Fatalf("scenario none scheduled %v", s)
	}
}

func TestClassifyWrite(t *testing.T) {
	cases := []struct {
		err      error
		typ      string
		mismatch bool
	}{
		{&callError{Code: codes.Aborted, Msg: "expected_version: expected version 3, current version is 4"}, TypeFail, true},
		{&callError{Code: codes.Aborted, HTTP: 409, Msg: "request_id was already used for a different request"}, TypeFail, false},
		{&callError{Code: codes.InvalidArgument, HTTP: 400, Msg: "nhs_number: check digit is wrong"}, TypeFail, false},
		{&callError{Code: codes.Unavailable, Msg: "outcome unknown (retrying with the same request_id is safe): leadership lost"}, TypeInfo, false},
		{&callError{Code: codes.Unavailable, HTTP: 503, Msg: "outcome unknown: forwarding to leader n1: no leader"}, TypeInfo, false},
		{&callError{Code: codes.Unavailable, Msg: "no leader: election in progress or no quorum (context deadline exceeded)"}, TypeFail, false},
		{&callError{Code: codes.Unavailable, Msg: "timed out handing the entry to raft; not proposed"}, TypeFail, false},
		{&callError{Code: codes.Unavailable, Msg: `connection error: desc = "transport: Error while dialing: dial tcp 10.213.77.13:9081: connect: connection refused"`, Transport: true}, TypeFail, false},
		{&callError{Transport: true, Msg: `Post "http://10.213.77.11:8081/v1/patients/9990000018/decisions": dial tcp 10.213.77.11:8081: connect: connection refused`}, TypeFail, false},
		{&callError{Code: codes.Unavailable, Msg: "error reading from server: EOF", Transport: true}, TypeInfo, false},
		{&callError{Code: codes.Unavailable, Msg: "connection error: desc = transport is closing", Transport: true}, TypeInfo, false},
		{&callError{Code: codes.DeadlineExceeded, HTTP: 504, Msg: "context deadline exceeded"}, TypeInfo, false},
		{&callError{Transport: true, Msg: "read: connection reset by peer"}, TypeInfo, false},
		{&callError{Code: codes.Unknown, HTTP: 413, Msg: "too large"}, TypeFail, false},
		{&callError{Code: codes.Unknown, HTTP: 502, Msg: "bad gateway"}, TypeInfo, false},
		{&callError{Code: codes.Internal, HTTP: 500, Msg: "internal error"}, TypeInfo, false},
		{errors.New("decode: unexpected EOF"), TypeInfo, false},
	}
	for _, c := range cases {
		typ, mismatch := classifyWrite(c.err)
		if typ != c.typ || mismatch != c.mismatch {
			t.Errorf("%v: %s/%v, want %s/%v", c.err, typ, mismatch, c.typ, c.mismatch)
		}
	}
}

func TestPatientNumbersAreValidTestNumbers(t *testing.T) {
	seen := map[string]bool{}
	for n := 0; n < 500; n++ {
		nhs := patientNumber(12345, n)
		if len(nhs) != 10 || !strings.HasPrefix(nhs, "999") {
			t.Fatalf("%q", nhs)
		}
		sum := 0
		for i := 0; i < 9; i++ {
			sum += int(nhs[i]-'0') * (10 - i)
		}
		check := (11 - sum%11) % 11
		if check == 10 || int(nhs[9]-'0') != check {
			t.Fatalf("%s fails Modulus 11", nhs)
		}
		if seen[nhs] {
			t.Fatalf("patient %d repeats %s", n, nhs)
		}
		seen[nhs] = true
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Scenario: "mixed", ReportDir: "r", Binary: "b"}.WithDefaults()
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*Config){
		"scenario": func(c *Config) { c.Scenario = "nope" },
		"nodes":    func(c *Config) { c.Nodes = 2 },
		"prefix":   func(c *Config) { c.Prefix = "Bad-Prefix" },
		"octet":    func(c *Config) { c.Octet = 300 },
		"report":   func(c *Config) { c.ReportDir = "" },
		"binary":   func(c *Config) { c.Binary = "" },
		"clients":  func(c *Config) { c.ClientsPerNode = 1 },
		"duration": func(c *Config) { c.Duration = time.Second },
	} {
		c := good
		mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "jepsen:") {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
	for _, n := range CIScenarios() {
		if _, ok := LookupScenario(n); !ok {
			t.Errorf("CI scenario %s is not defined", n)
		}
	}
}

// The counters as nft 1.0 lists them after a trap.
func TestParseStarveCounts(t *testing.T) {
	listing := `table inet cj88 {
	set starved {
		type ipv4_addr
		elements = { 10.213.88.11, 10.213.88.13 }
	}

	chain input {
		type filter hook input priority filter - 10; policy accept;
		ip saddr @blocked counter packets 0 bytes 0 drop
		ip saddr @starved tcp dport 7081 meta length <= 320 counter packets 41 bytes 7790
		ip saddr @starved tcp dport 7081 meta length > 320 counter packets 7 bytes 9660 drop
	}
}`
	c, ok := parseStarveCounts(listing)
	if !ok || c != (StarveCounts{Passed: 41, Dropped: 7}) {
		t.Fatalf("got %+v, %v", c, ok)
	}
	if _, ok := parseStarveCounts(nftScript("cj88", NodeRules{})); ok {
		t.Fatal("a table without starve rules parsed as having them")
	}
}

// An InTurn scenario sets every trap on every seed, in the order listed,
// each with the whole trap hold: the broken-variant test relies on a 20s
// run of targeted-leader-change starting with NewLeaderReads.
func TestInTurnSchedule(t *testing.T) {
	sc, _ := LookupScenario("targeted-leader-change")
	if !sc.InTurn || len(sc.Faults) != 2 || sc.Faults[0].Fault != NewLeaderReads || sc.Faults[1].Fault != ResumedLeaderReads {
		t.Fatalf("targeted-leader-change is %+v", sc)
	}
	for _, et := range []time.Duration{500 * time.Millisecond, time.Second} {
		for seed := int64(1); seed <= 40; seed++ {
			for _, d := range []time.Duration{20 * time.Second, 60 * time.Second} {
				steps := GenerateSchedule(seed, sc, ScheduleConfig{Duration: d, ElectionTimeout: et})
				if len(steps) == 0 {
					t.Fatalf("et %v seed %d %v: no steps", et, seed, d)
				}
				for i, st := range steps {
					if want := sc.Faults[i%2].Fault; st.Fault != want {
						t.Fatalf("et %v seed %d %v step %d: %s, want %s", et, seed, d, i, st.Fault, want)
					}
					if st.Hold != trapHold(et) {
						t.Fatalf("et %v seed %d step %d: hold %v, want %v", et, seed, i, st.Hold, trapHold(et))
					}
				}
				if d == 60*time.Second && len(steps) < 3 {
					t.Fatalf("et %v seed %d: only %d traps in a minute", et, seed, len(steps))
				}
			}
		}
	}
}

// A trap's hold leaves room for a second attempt after a quick miss.
func TestTrapHold(t *testing.T) {
	for _, et := range []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second} {
		h := trapHold(et)
		if h < 6*time.Second || h < 12*et {
			t.Fatalf("election timeout %v: hold %v", et, h)
		}
	}
}

func TestSplitFollowers(t *testing.T) {
	all := func(string, string) bool { return true }
	fed, starved, ok := splitFollowers([]string{"n3", "n1"}, 1, all)
	if !ok || !reflect.DeepEqual(fed, []string{"n3"}) || !reflect.DeepEqual(starved, []string{"n1"}) {
		t.Fatalf("without a constraint the first follower is fed: %v %v %v", fed, starved, ok)
	}
	// Only n1 holds a connection (to n3): n1 must be the fed one.
	conns := map[[2]string]bool{{"n1", "n3"}: true}
	has := func(a, b string) bool { return conns[[2]string{a, b}] }
	if fed, starved, ok := splitFollowers([]string{"n3", "n1"}, 1, has); !ok || fed[0] != "n1" || starved[0] != "n3" {
		t.Fatalf("got %v %v %v", fed, starved, ok)
	}
	if _, _, ok := splitFollowers([]string{"n2", "n3"}, 1, has); ok {
		t.Fatal("split found with no connection")
	}
	// Five nodes: two fed, two starved; each fed one must reach a starved one.
	conns = map[[2]string]bool{{"n2", "n4"}: true, {"n5", "n3"}: true}
	fed, starved, ok = splitFollowers([]string{"n2", "n3", "n4", "n5"}, 2, has)
	if !ok || !reflect.DeepEqual(fed, []string{"n2", "n5"}) || !reflect.DeepEqual(starved, []string{"n3", "n4"}) {
		t.Fatalf("got %v %v %v", fed, starved, ok)
	}
	if _, _, ok := splitFollowers([]string{"n2"}, 1, all); ok {
		t.Fatal("a split with nobody starved")
	}
}
