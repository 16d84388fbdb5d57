package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lmc-consent/consentd/internal/testnet"
	"github.com/lmc-consent/consentd/node"
	"github.com/lmc-consent/consentd/pki"
)

func freeAddr(t *testing.T) string { return testnet.FreeAddr(t) }

// waitReady polls until the node answers a read, for at most 10 seconds.
func waitReady(t *testing.T, answers func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !answers(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("node never became ready")
		}
	}
}

// TestAgainstOneNode drives the CLI against a real one-node cluster.
func TestAgainstOneNode(t *testing.T) {
	n, err := node.Start(context.Background(), node.Config{
		ID: "n1", DataDir: filepath.Join(t.TempDir(), "n1"), RaftAddr: freeAddr(t), GRPCAddr: freeAddr(t),
		HTTPAddr: freeAddr(t), Bootstrap: true, Insecure: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	ctl := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(append([]string{"--addr", n.GRPCAddr(), "--timeout", "5s"}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	waitReady(t, func() bool { code, _, _ := ctl("get", "9990000018"); return code == 0 })
	code, out, errOut := ctl("record", "9990000018", "scr", "dissent", "--request-id", "ctl-1")
	if code != 0 {
		t.Fatalf("record: %d %s", code, errOut)
	}
	var rec struct {
		Decision struct{ Version string } `json:"decision"`
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil || rec.Decision.Version != "1" {
		t.Fatalf("record output %s (%v)", out, err)
	}
	if code, out, _ := ctl("check", "scr", "9990000018", "9000000009"); code != 0 || !strings.Contains(out, "dissent") || !strings.Contains(out, "implied_core") {
		t.Fatalf("check: %d %s", code, out)
	}
	if code, _, errOut := ctl("record", "9990000017", "scr", "dissent"); code != 1 || !strings.Contains(errOut, "InvalidArgument") {
		t.Fatalf("invalid number: %d %s", code, errOut)
	}
	if code, _, _ := ctl("frobnicate"); code != 2 {
		t.Fatalf("unknown command exit %d", code)
	}
	if code, out, _ := ctl("status"); code != 0 || !strings.Contains(out, "leader") {
		t.Fatalf("status: %d %s", code, out)
	}
	if code, out, _ := ctl("status", "-digest"); code != 0 || !regexp.MustCompile(`"stateDigest":\s*"[0-9a-f]{16,}"`).MatchString(out) {
		t.Fatalf("status -digest: %d %s", code, out)
	}

	// More decisions than the node's largest page: history must follow the
	// page tokens and show all of them, oldest first, each once.
	const total = 130
	for i := 2; i <= total; i++ {
		state := []string{"consent_core_additional", "dissent"}[i%2]
		if code, _, errOut := ctl("record", "9990000018", "scr", state, "--request-id", fmt.Sprintf("ctl-%d", i)); code != 0 {
			t.Fatalf("record %d: %s", i, errOut)
		}
	}
	code, out, errOut = ctl("history", "9990000018")
	if code != 0 {
		t.Fatalf("history: %d %s", code, errOut)
	}
	var hist struct {
		Decisions []struct{ Version string } `json:"decisions"`
	}
	if err := json.Unmarshal([]byte(out), &hist); err != nil {
		t.Fatal(err)
	}
	if len(hist.Decisions) != total {
		t.Fatalf("history shows %d decisions, want %d", len(hist.Decisions), total)
	}
	for i, d := range hist.Decisions {
		if d.Version != fmt.Sprint(i+1) {
			t.Fatalf("decision %d has version %s, want %d", i, d.Version, i+1)
		}
	}
}

// TestAgainstOneTLSNode: with certificates, consentctl acts as the caller
// they name, and the node's authorisation applies.
func TestAgainstOneTLSNode(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if err := pki.WriteDevSet(certs, pki.DevSet{Cluster: "consentd", Nodes: []string{"n1"}, Hosts: []string{"127.0.0.1"}, Callers: pki.DefaultDevCallers()}); err != nil {
		t.Fatal(err)
	}
	file := func(n string) string { return filepath.Join(certs, n) }
	src, err := pki.NewSource(pki.Files{CA: file("ca.pem"), Cert: file("n1.pem"), Key: file("n1-key.pem")}, "consentd", nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.Start(context.Background(), node.Config{
		ID: "n1", DataDir: filepath.Join(dir, "n1"), RaftAddr: freeAddr(t), GRPCAddr: freeAddr(t),
		HTTPAddr: freeAddr(t), Bootstrap: true, TLS: src,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	as := func(who string, args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := run(append([]string{"--addr", n.GRPCAddr(), "--timeout", "5s", "--ca-file", file("ca.pem"),
			"--cert-file", file(who + ".pem"), "--key-file", file(who + "-key.pem")}, args...), &out, &errOut)
		return code, out.String() + errOut.String()
	}
	waitReady(t, func() bool { code, _ := as("reader", "get", "9990000018"); return code == 0 })
	if code, out := as("reader", "record", "9990000018", "scr", "dissent"); code != 1 || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("reader record: %d %s", code, out)
	}
	code, out := as("practice", "record", "9990000018", "scr", "dissent")
	var rec struct {
		Decision struct {
			RecordedBy struct{ OdsCode string } `json:"recordedBy"`
		} `json:"decision"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rec) != nil || rec.Decision.RecordedBy.OdsCode != "Y00001" {
		t.Fatalf("practice record: %d %s", code, out)
	}
	if code, out := as("practice", "remove-member", "n2"); code != 1 || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("practice remove-member: %d %s", code, out)
	}
	var plainOut, plainErr bytes.Buffer
	if code := run([]string{"--addr", n.GRPCAddr(), "--timeout", "2s", "status"}, &plainOut, &plainErr); code != 1 {
		t.Fatalf("plain TCP against a TLS node: exit %d %s", code, plainErr.String())
	}
}
