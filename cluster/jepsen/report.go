package jepsen

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// File names inside a scenario's report folder.
const (
	FileHistory = "history.jsonl"
	FileNemesis = "nemesis.jsonl"
	FileLeaders = "leaders.jsonl"
	FileFinal   = "final.json"
	FileRun     = "run.json"
	FileResults = "results.json"
	FileHTML    = "history.html"
)

// NemesisEvent is one realised nemesis action, as logged to nemesis.jsonl.
type NemesisEvent struct {
	Time   int64  `json:"time"` // ns since run start
	Wall   string `json:"wall"` // RFC 3339, for reading beside node logs
	Step   int    `json:"step"` // index in the schedule; -1 for the final heal
	Phase  string `json:"phase"`
	Fault  Fault  `json:"fault,omitempty"`
	Leader string `json:"leader"` // the leader when the action was taken
	Term   uint64 `json:"term,omitempty"`
	// Targets are the nodes acted on; Detail says how (e.g. the grudge).
	Targets []string `json:"targets,omitempty"`
	Detail  string   `json:"detail,omitempty"`
	// Error is set when the nemesis could not do what it meant to.
	Error string `json:"error,omitempty"`
	// Action names one realised part of a membership change (an Action*
	// constant); Slot is the node's namespace (its first raft id), and
	// Outcome the API's answer when it was not a plain success.
	Action  string `json:"action,omitempty"`
	Slot    string `json:"slot,omitempty"`
	Outcome string `json:"outcome,omitempty"`
}

// Nemesis phases.
const (
	PhaseStart = "start" // fault applied
	PhaseEnd   = "end"   // fault healed
	PhaseHeal  = "heal"  // the final heal of everything
	PhaseStep  = "step"  // one realised part of a membership change
)

// Actions of the membership nemesis, in the order they happen.
const (
	ActionSkip   = "skip"   // no change: the cluster was not healthy enough
	ActionRemove = "remove" // RemoveMember answered (or its outcome was resolved)
	ActionStop   = "stop"   // the removed node's process stopped
	ActionWipe   = "wipe"   // its data dir deleted
	ActionStart  = "start"  // a process with a fresh raft id started with --join; Targets[0] is the new id
	ActionVoter  = "voter"  // the new id is a voter that serves linearizable reads
	// ActionTrap is one attempt of a trap (NewLeaderReads,
	// ResumedLeaderReads), or its undoing.
	ActionTrap = "trap"
)

// LeaderObs is one poll of a node's cluster status, as logged to leaders.jsonl.
type LeaderObs struct {
	Time   int64  `json:"time"`
	Node   string `json:"node"`
	State  string `json:"state"`
	Leader string `json:"leader"`
	Term   uint64 `json:"term"`
}

// DecisionVal is one decision of a final history read.
type DecisionVal struct {
	ID            string `json:"id"`
	Kind          string `json:"kind"`
	State         string `json:"state"`
	Reason        string `json:"reason"`
	RequestID     string `json:"requestId"`
	Version       uint64 `json:"version"`
	Revision      uint64 `json:"revision"`
	EffectiveFrom int64  `json:"eff"` // unix microseconds
}

// StatusVal is a node's cluster status.
type StatusVal struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	Leader       string `json:"leader"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commitIndex"`
	AppliedIndex uint64 `json:"appliedIndex"`
	StateDigest  string `json:"stateDigest"`
	Members      int    `json:"members"`
	// MemberIDs are the voters of the node's raft configuration, sorted.
	MemberIDs []string `json:"memberIds,omitempty"`
}

// NodeFinal is what one node answered after the final heal.
type NodeFinal struct {
	Status StatusVal `json:"status"`
	// Consents and Histories are keyed by NHS number; histories then by kind.
	Consents  map[string][]ConsentVal             `json:"consents"`
	Histories map[string]map[string][]DecisionVal `json:"histories"`
	Errors    []string                            `json:"errors,omitempty"`
}

// Final is the state of every node after the final heal and quiet period.
type Final struct {
	// HealTime is when the final heal was applied (ns since start).
	HealTime int64 `json:"healTime"`
	// StopTime is when the workload had stopped, after the quiet period.
	StopTime int64 `json:"stopTime"`
	// ConvergedAfterMs is how long after the workload stopped every node
	// served linearizable reads at the same applied index and digest; -1
	// if they never did.
	ConvergedAfterMs int64                `json:"convergedAfterMs"`
	Nodes            map[string]NodeFinal `json:"nodes"`
	// NodeExits lists processes that exited without being asked to, or did
	// not stop promptly and cleanly on SIGTERM (at the end, or when the
	// membership nemesis stopped a removed node).
	NodeExits []string `json:"nodeExits,omitempty"`
	// Members are the raft ids the runner expects in the configuration at
	// the end, in slot order; Nodes is keyed by them. Empty in reports of
	// runs without membership changes, where they are Run.Nodes.
	Members []string `json:"members,omitempty"`
	// Retired are raft ids removed by the membership nemesis; their
	// processes' logs are checked too.
	Retired []string `json:"retired,omitempty"`
	// SetupError is set when the run could not finish its final reads.
	SetupError string `json:"setupError,omitempty"`
}

// RunInfo is the configuration a report was produced with.
type RunInfo struct {
	Scenario          string   `json:"scenario"`
	Seed              int64    `json:"seed"`
	TLS               bool     `json:"tls,omitempty"`
	Nodes             []string `json:"nodes"`
	DurationMs        int64    `json:"durationMs"`
	ElectionTimeoutMs int64    `json:"electionTimeoutMs"`
	RecoveryBoundMs   int64    `json:"recoveryBoundMs"`
	CheckTimeoutMs    int64    `json:"checkTimeoutMs"`
	NeedsLeaderChange bool     `json:"needsLeaderChange"`
	NodeArgs          []string `json:"nodeArgs,omitempty"`
	SnapshotStress    bool     `json:"snapshotStress,omitempty"`
	Schedule          []Step   `json:"schedule"`
}

// Report is everything the checkers need, loaded from a folder or built in
// memory at the end of a run.
type Report struct {
	Dir     string
	Run     RunInfo
	History []Op
	Nemesis []NemesisEvent
	Leaders []LeaderObs
	Final   Final
	// Logs maps node id to the path of its log file.
	Logs map[string]string
}

// LoadReport reads a scenario's report folder.
func LoadReport(dir string) (*Report, error) {
	r := &Report{Dir: dir, Logs: map[string]string{}}
	var errs []error
	if err := readJSON(filepath.Join(dir, FileRun), &r.Run); err != nil {
		errs = append(errs, err)
	}
	if err := readJSON(filepath.Join(dir, FileFinal), &r.Final); err != nil {
		errs = append(errs, err)
	}
	var err error
	if r.History, err = ReadJSONL[Op](filepath.Join(dir, FileHistory)); err != nil {
		errs = append(errs, err)
	}
	if r.Nemesis, err = ReadJSONL[NemesisEvent](filepath.Join(dir, FileNemesis)); err != nil {
		errs = append(errs, err)
	}
	if r.Leaders, err = ReadJSONL[LeaderObs](filepath.Join(dir, FileLeaders)); err != nil {
		errs = append(errs, err)
	}
	for _, n := range r.processIDs() {
		r.Logs[n] = filepath.Join(dir, n+".log")
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("load report %s: %w", dir, err)
	}
	return r, nil
}

// members are the raft ids expected in the configuration at the end.
func (r *Report) members() []string {
	if len(r.Final.Members) > 0 {
		return r.Final.Members
	}
	return r.Run.Nodes
}

// processIDs are the raft ids of every process the run started: the
// initial nodes, the members at the end and the retired ones.
func (r *Report) processIDs() []string {
	seen := map[string]bool{}
	var out []string
	for _, list := range [][]string{r.Run.Nodes, r.Final.Members, r.Final.Retired} {
		for _, id := range list {
			if !seen[id] {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	return out
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func writeJSONL[T any](path string, vs []T) error {
	var sb strings.Builder
	for _, v := range vs {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		sb.Write(b)
		sb.WriteByte('\n')
	}
	return os.WriteFile(path, []byte(sb.String()), 0o644)
}

// Verdicts of a checker or a whole scenario.
const (
	Pass         = "pass"
	Fail         = "fail"
	Inconclusive = "inconclusive"
)

// CheckResult is one checker's verdict.
type CheckResult struct {
	Name    string `json:"name"`
	Verdict string `json:"verdict"`
	Summary string `json:"summary"`
	// Problems lists the first violations found.
	Problems []string `json:"problems,omitempty"`
	// Omitted counts violations not listed.
	Omitted int `json:"omitted,omitempty"`
}

// maxProblems caps how many violations a checker lists.
const maxProblems = 20

func (c *CheckResult) problem(format string, args ...any) {
	c.Verdict = Fail
	if len(c.Problems) >= maxProblems {
		c.Omitted++
		return
	}
	c.Problems = append(c.Problems, fmt.Sprintf(format, args...))
}

// Results is a scenario's results.json.
type Results struct {
	Scenario      string        `json:"scenario"`
	Seed          int64         `json:"seed"`
	TLS           bool          `json:"tls,omitempty"`
	Verdict       string        `json:"verdict"`
	OK            int           `json:"ok"`
	Fail          int           `json:"fail"`
	Info          int           `json:"info"`
	LeaderChanges int           `json:"leaderChanges"`
	RecoveryMs    int64         `json:"recoveryMs"`
	Checks        []CheckResult `json:"checks"`
}

// Summary is the one-line summary of a scenario.
func (r Results) Summary() string {
	var parts []string
	for _, c := range r.Checks {
		parts = append(parts, c.Name+"="+c.Verdict)
	}
	rec := "none"
	if r.RecoveryMs >= 0 {
		rec = fmt.Sprintf("%dms", r.RecoveryMs)
	}
	transport := ""
	if r.TLS {
		transport = " tls=on"
	}
	return fmt.Sprintf("%s %s seed=%d%s ops ok=%d fail=%d info=%d leader-changes=%d recovery=%s [%s]",
		strings.ToUpper(r.Verdict), r.Scenario, r.Seed, transport, r.OK, r.Fail, r.Info, r.LeaderChanges, rec, strings.Join(parts, " "))
}

// Tally is the closing line over many scenarios: inconclusive counts as
// not passed.
func Tally(results []Results) string {
	passed, failed := 0, 0
	for _, r := range results {
		if r.Verdict == Pass {
			passed++
		} else {
			failed++
		}
	}
	return fmt.Sprintf("%d passed, %d failed", passed, failed)
}

// sortedKeys returns a map's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
