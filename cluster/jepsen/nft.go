package jepsen

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// NodeRules is the fault state of one node's namespace: the addresses whose
// packets it drops, and those it drops a percentage of.
type NodeRules struct {
	Blocked     []string
	Lossy       []string
	LossPercent int
	// Starved addresses reach StarvePort only with packets of at most
	// StarveAbove bytes: raft heartbeats pass, log entries do not.
	Starved     []string
	StarvePort  int
	StarveAbove int
}

// nftScript renders a node's rules as one nft script that replaces the
// run's table atomically (nft -f applies a file as one transaction). The
// input hook sees every packet from a peer, so dropping there is enough for
// both symmetric and one-way cuts; DROP, never REJECT, so peers see
// silence as in a real partition.
func nftScript(table string, r NodeRules) string {
	var b strings.Builder
	// Declaring then deleting makes the delete succeed whether or not the
	// table existed.
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\ntable inet %s {\n", table, table, table)
	writeSet(&b, "blocked", r.Blocked)
	writeSet(&b, "lossy", r.Lossy)
	writeSet(&b, "starved", r.Starved)
	b.WriteString("\tchain input {\n\t\ttype filter hook input priority -10; policy accept;\n")
	b.WriteString("\t\tip saddr @blocked counter drop\n")
	if r.LossPercent > 0 && len(r.Lossy) > 0 {
		fmt.Fprintf(&b, "\t\tip saddr @lossy numgen random mod 100 < %d counter drop\n", r.LossPercent)
	}
	if len(r.Starved) > 0 && r.StarvePort > 0 && r.StarveAbove > 0 {
		// The first rule only counts what passes, so a trap can show that
		// heartbeats still got through while entries were dropped.
		fmt.Fprintf(&b, "\t\tip saddr @starved tcp dport %d meta length <= %d counter\n", r.StarvePort, r.StarveAbove)
		fmt.Fprintf(&b, "\t\tip saddr @starved tcp dport %d meta length > %d counter drop\n", r.StarvePort, r.StarveAbove)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

func writeSet(b *strings.Builder, name string, addrs []string) {
	fmt.Fprintf(b, "\tset %s {\n\t\ttype ipv4_addr\n", name)
	if len(addrs) > 0 {
		sorted := append([]string(nil), addrs...)
		sort.Strings(sorted)
		fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(sorted, ", "))
	}
	b.WriteString("\t}\n")
}

// rulesFor turns a grudge and a loss setting into each node's rules, by
// address. ips maps node id to address; the controller's address never
// appears because only node ids are in a grudge.
func rulesFor(nodes []string, ips map[string]string, g Grudge, lossPercent int) map[string]NodeRules {
	out := make(map[string]NodeRules, len(nodes))
	for _, n := range nodes {
		var r NodeRules
		for _, from := range g[n] {
			r.Blocked = append(r.Blocked, ips[from])
		}
		if lossPercent > 0 {
			r.LossPercent = lossPercent
			for _, peer := range nodes {
				if peer != n {
					r.Lossy = append(r.Lossy, ips[peer])
				}
			}
		}
		out[n] = r
	}
	return out
}

// StarveCounts is what a starve rule let through and dropped, in packets,
// since the rules were last applied.
type StarveCounts struct {
	Passed, Dropped int64
}

var starveCounter = regexp.MustCompile(`@starved .*meta length (<=|>) \d+ counter packets (\d+) bytes \d+`)

// parseStarveCounts reads the two starve rules' counters from the output
// of `nft list table`; ok is false when the rules are not there.
func parseStarveCounts(listing string) (c StarveCounts, ok bool) {
	seen := 0
	for _, m := range starveCounter.FindAllStringSubmatch(listing, -1) {
		n, err := strconv.ParseInt(m[2], 10, 64)
		if err != nil {
			continue
		}
		seen++
		if m[1] == "<=" {
			c.Passed += n
		} else {
			c.Dropped += n
		}
	}
	return c, seen == 2
}
