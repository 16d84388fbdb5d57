package jepsen

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lmc-consent/consentd/pki"
)

func TestCertNodeIDs(t *testing.T) {
	if got := certNodeIDs([]string{"n1", "n2"}, 0); !reflect.DeepEqual(got, []string{"n1", "n2"}) {
		t.Fatalf("no replacements: %v", got)
	}
	want := []string{"n1", "n1b", "n1c", "n2", "n2b", "n2c"}
	if got := certNodeIDs([]string{"n1", "n2"}, 2); !reflect.DeepEqual(got, want) {
		t.Fatalf("two replacements: %v, want %v", got, want)
	}
}

// Every id the membership nemesis can give a slot has a certificate.
func TestReplacementsBoundCoversTheSchedule(t *testing.T) {
	sc, _ := LookupScenario("membership")
	steps := GenerateSchedule(7, sc, ScheduleConfig{Duration: 60 * time.Second, ElectionTimeout: 500 * time.Millisecond})
	n := 0
	for _, st := range steps {
		if st.Fault == Membership {
			n++
		}
	}
	if n == 0 {
		t.Fatal("the membership schedule has no membership step")
	}
	bound := replacementsBound(steps)
	if bound < n {
		t.Fatalf("bound %d for %d membership steps", bound, n)
	}
	ids := certNodeIDs([]string{"n1", "n2", "n3"}, bound)
	for gen := 0; gen <= n; gen++ {
		if id := replacementID("n2", gen); !strings.Contains(","+strings.Join(ids, ",")+",", ","+id+",") {
			t.Fatalf("no certificate for %s in %v", id, ids)
		}
	}
	none, _ := LookupScenario("partition-leader-bridge")
	if got := replacementsBound(GenerateSchedule(7, none, ScheduleConfig{Duration: 60 * time.Second, ElectionTimeout: 500 * time.Millisecond})); got != 0 {
		t.Fatalf("replacements for a scenario without membership steps: %d", got)
	}
}

func TestCertDirNames(t *testing.T) {
	d := certDir("/w/certs")
	if cert, key := d.node("n2b"); cert != "/w/certs/n2b.pem" || key != "/w/certs/n2b-key.pem" {
		t.Fatalf("node files %s %s", cert, key)
	}
	if cert, key := d.caller(callerLMCAdmin); cert != "/w/certs/lmc-admin.pem" || key != "/w/certs/lmc-admin-key.pem" {
		t.Fatalf("caller files %s %s", cert, key)
	}
	want := []string{"--ca-file", "/w/certs/ca.pem", "--cert-file", "/w/certs/n1.pem", "--key-file", "/w/certs/n1-key.pem", "--rate-limit", "-1"}
	if got := d.nodeArgs("n1"); !reflect.DeepEqual(got, want) {
		t.Fatalf("node args %v", got)
	}
}

// The caller stems are the files `consentd certs` writes, with the roles
// the suite needs.
func TestCallersAreDevCallers(t *testing.T) {
	roles := map[string]pki.Role{}
	for _, c := range pki.DefaultDevCallers() {
		roles[c.Name] = c.Role
	}
	for c, want := range map[certCaller]pki.Role{callerPractice: pki.RolePractice, callerReader: pki.RoleReader, callerLMCAdmin: pki.RoleLMCAdmin} {
		if roles[string(c)] != want {
			t.Errorf("%s.pem has role %q, want %q", c, roles[string(c)], want)
		}
	}
}

// A client made from a certificate folder verifies a node by the IP it
// dials and presents its caller certificate.
func TestCallerTLSHandshake(t *testing.T) {
	dir := certDir(filepath.Join(t.TempDir(), "certs"))
	if err := pki.WriteDevSet(string(dir), pki.DevSet{Cluster: "consentd", Nodes: []string{"n1"}, Hosts: []string{"127.0.0.1"},
		Callers: pki.DefaultDevCallers()}); err != nil {
		t.Fatal(err)
	}
	callers, err := dir.callerTLS()
	if err != nil {
		t.Fatal(err)
	}
	cert, key := dir.node("n1")
	nodeCert, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", http.StatusUnauthorized)
			return
		}
		w.Write([]byte("ok " + r.TLS.PeerCertificates[0].Subject.CommonName))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{nodeCert}, ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	defer srv.Close()

	var d net.Dialer
	api := newRESTAPI(srv.Listener.Addr().String(), d.DialContext, callers.admin)
	defer api.Close()
	resp, err := api.hc.Get(api.base + "/")
	if err != nil {
		t.Fatalf("handshake as lmc-admin: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok lmc-operator" {
		t.Fatalf("server saw %q", body)
	}
	// The node certificate is valid for 127.0.0.1 only.
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	other := newRESTAPI("localhost:"+port, d.DialContext, callers.workload)
	defer other.Close()
	if _, err := other.hc.Get(other.base + "/"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a name the certificate does not carry was accepted: %v", err)
	}
	if plain := newRESTAPI("127.0.0.1:1", d.DialContext, nil); plain.base != "http://127.0.0.1:1" {
		t.Fatalf("plain base %s", plain.base)
	}
}

func TestCIRunsOneOverTLS(t *testing.T) {
	var tls []string
	for _, r := range CIRuns() {
		if _, ok := LookupScenario(r.Scenario); !ok {
			t.Errorf("CI runs unknown scenario %q", r.Scenario)
		}
		if r.TLS {
			tls = append(tls, r.Scenario)
		}
	}
	if !reflect.DeepEqual(tls, []string{"partition-leader-bridge"}) || !CITLS("partition-leader-bridge") || CITLS("mixed") || CITLS("membership") {
		t.Fatalf("CI runs over TLS: %v", tls)
	}
}

func TestSummarySaysTLS(t *testing.T) {
	r := Results{Scenario: "partition-leader-bridge", Seed: 3, Verdict: Pass, TLS: true}
	if s := r.Summary(); !strings.HasPrefix(s, "PASS partition-leader-bridge seed=3 tls=on ops ") {
		t.Fatal(s)
	}
	r.TLS = false
	if s := r.Summary(); strings.Contains(s, "tls") {
		t.Fatal(s)
	}
}
