package raftnode

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// nodeMetrics are per node (no global registry), so several nodes in one
// process (consentd dev, tests) report separately.
type nodeMetrics struct {
	n            *Node
	applyLatency *prometheus.HistogramVec
	readLatency  *prometheus.HistogramVec
	readBatch    prometheus.Histogram
	gauges       *prometheus.Desc
}

func newNodeMetrics(n *Node) *nodeMetrics {
	buckets := prometheus.ExponentialBuckets(0.0005, 2, 14)
	return &nodeMetrics{
		n: n,
		applyLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "consentd_raft_apply_seconds", Help: "Time from proposing an entry to its application, by outcome.", Buckets: buckets,
		}, []string{"outcome"}),
		readLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "consentd_raft_read_index_seconds", Help: "Time to obtain a confirmed read index, by outcome.", Buckets: buckets,
		}, []string{"outcome"}),
		readBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "consentd_raft_read_index_batch_size", Help: "Reads sharing one leadership confirmation.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		gauges: prometheus.NewDesc("consentd_raft", "Raft state of this node (see the stat label).", []string{"stat"}, nil),
	}
}

func outcomeLabel(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNotLeader):
		return "not_leader"
	case errors.Is(err, ErrNotReady):
		return "not_ready"
	case errors.Is(err, ErrOutcomeUnknown):
		return "unknown"
	default:
		return "error"
	}
}

func (m *nodeMetrics) observeApply(start time.Time, err error) {
	m.applyLatency.WithLabelValues(outcomeLabel(err)).Observe(time.Since(start).Seconds())
}

func (m *nodeMetrics) observeReadIndex(start time.Time, err error) {
	m.readLatency.WithLabelValues(outcomeLabel(err)).Observe(time.Since(start).Seconds())
}

// Collector exports this node's raft metrics; register it with the node's
// Prometheus registry.
func (n *Node) Collector() prometheus.Collector { return n.metrics }

func (m *nodeMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.applyLatency.Describe(ch)
	m.readLatency.Describe(ch)
	m.readBatch.Describe(ch)
	m.n.adapter.commitSeconds.Describe(ch)
	ch <- m.gauges
}

func (m *nodeMetrics) Collect(ch chan<- prometheus.Metric) {
	m.applyLatency.Collect(ch)
	m.readLatency.Collect(ch)
	m.readBatch.Collect(ch)
	m.n.adapter.commitSeconds.Collect(ch)
	st := m.n.Status()
	leader := 0.0
	if st.State == "leader" {
		leader = 1
	}
	ready := 0.0
	if st.Ready {
		ready = 1
	}
	since := 0.0
	if st.State != "leader" && !st.LastContact.IsZero() {
		since = time.Since(st.LastContact).Seconds()
	}
	// From the register's own indexes: st.AppliedIndex may be carried past
	// the handed index over no-op entries.
	committed, handed, _ := m.n.applied.current()
	commitLag := handed - min(committed, handed)
	stats := m.n.raft.Stats()
	num := func(k string) float64 {
		v, _ := strconv.ParseFloat(stats[k], 64)
		return v
	}
	for _, g := range []struct {
		stat string
		v    float64
	}{
		{"term", float64(st.Term)},
		{"commit_index", float64(st.CommitIndex)},
		{"applied_index", float64(st.AppliedIndex)},
		{"last_log_index", float64(st.LastLogIndex)},
		{"is_leader", leader},
		{"leader_ready", ready},
		{"seconds_since_leader_contact", since},
		{"fsm_pending", num("fsm_pending")},
		{"register_commit_lag", float64(commitLag)},
		{"last_snapshot_index", num("last_snapshot_index")},
		// What the byte-based snapshot triggers go by (Config.SnapshotLogBytes).
		{"log_bytes_since_snapshot", float64(max(m.n.adapter.sinceSnapshot.Load(), 0))},
		{"snapshots_being_written", float64(m.n.adapter.writingSnapshots.Load())},
		{"num_peers", num("num_peers")},
	} {
		ch <- prometheus.MustNewConstMetric(m.gauges, prometheus.GaugeValue, g.v, g.stat)
	}
}
