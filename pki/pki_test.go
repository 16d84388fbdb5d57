package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const cl = "test-cluster"

func newCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA(cl, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// writeSet writes ca.pem and one leaf as name.pem/name-key.pem; it returns
// the Files of that leaf.
func writeSet(t *testing.T, dir string, ca *CA, name string, l Leaf) Files {
	t.Helper()
	f := Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
	for p, b := range map[string][]byte{f.CA: ca.PEM, f.Cert: l.CertPEM, f.Key: l.KeyPEM} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func source(t *testing.T, ca *CA, l Leaf) *Source {
	t.Helper()
	s, err := NewSource(writeSet(t, t.TempDir(), ca, "x", l), cl, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func node(t *testing.T, ca *CA, id string) Leaf {
	t.Helper()
	l, err := ca.IssueNode(cl, id, []string{"127.0.0.1", "localhost"}, IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func caller(t *testing.T, ca *CA, org string, role Role, o IssueOptions) Leaf {
	t.Helper()
	l, err := ca.IssueCaller(cl, org, role, "user-1", o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func parse(t *testing.T, l Leaf) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(l.CertPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIdentityOf(t *testing.T) {
	ca := newCA(t)
	id, err := IdentityOf(parse(t, node(t, ca, "n1")), cl)
	if err != nil || !id.IsNode() || id.NodeID != "n1" {
		t.Fatalf("node: %+v %v", id, err)
	}
	id, err = IdentityOf(parse(t, caller(t, ca, "Y00001", RolePractice, IssueOptions{})), cl)
	if err != nil || id.IsNode() || id.Org != "Y00001" || id.Role != RolePractice || id.Subject != "user-1" {
		t.Fatalf("caller: %+v %v", id, err)
	}
	if _, err := IdentityOf(parse(t, node(t, ca, "n1")), "other-cluster"); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("another cluster's node accepted: %v", err)
	}
}

func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/node/n1", true},
		{"/org/Y00001/role/practice", true},
		{"/org/Y00001/role/auditor", true},
		{"/org/Y00001/role/root", false},
		{"/org/y00001/role/practice", false},
		{"/org/Y00001/role/practice/extra", false},
		{"/node/", false},
		{"/node/n1/x", false},
		{"/node/../n1", false},
		{"", false},
	} {
		if _, err := parsePath(cl, tc.path); (err == nil) != tc.ok {
			t.Errorf("%q: err %v, want ok=%v", tc.path, err, tc.ok)
		}
	}
}

func TestIssueRefusesBadInput(t *testing.T) {
	ca := newCA(t)
	if _, err := ca.IssueCaller(cl, "not an ods", RolePractice, "u", IssueOptions{}); err == nil {
		t.Error("bad ODS code issued")
	}
	if _, err := ca.IssueCaller(cl, "Y00001", "superuser", "u", IssueOptions{}); err == nil {
		t.Error("unknown role issued")
	}
	if _, err := ca.IssueNode(cl, "n 1", nil, IssueOptions{}); err == nil {
		t.Error("bad node id issued")
	}
}

// handshake runs a TLS handshake over loopback and returns each side's error.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		err = tc.Handshake()
		if err == nil {
			// TLS 1.3 finishes the client's side before the server has
			// checked the client certificate; a read surfaces the verdict.
			_, err = tc.Write([]byte("x"))
		}
		done <- err
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), client)
	if err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	return <-done, err
}

func TestHandshakes(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	n1, n2 := source(t, ca, node(t, ca, "n1")), source(t, ca, node(t, ca, "n2"))
	practice := source(t, ca, caller(t, ca, "Y00001", RolePractice, IssueOptions{}))
	expired := source(t, ca, caller(t, ca, "Y00001", RolePractice, IssueOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}))
	foreign := source(t, other, node(t, other, "n9"))

	for _, tc := range []struct {
		name           string
		server, client *tls.Config
		ok             bool
		want           string
	}{
		{"node to node on the raft port", n1.ServerConfig(true, OnlyNodes), n2.ClientConfig(OnlyNodes), true, ""},
		{"caller certificate on the raft port", n1.ServerConfig(true, OnlyNodes), practice.ClientConfig(OnlyNodes), false, "not a node"},
		{"node of another CA", n1.ServerConfig(true, OnlyNodes), foreign.ClientConfig(OnlyNodes), false, "unknown authority"},
		{"expired caller", n1.ServerConfig(true, nil), expired.ClientConfig(OnlyNodes), false, "expired"},
		{"caller certificate acting as a server", practice.ServerConfig(true, nil), n1.ClientConfig(nil), false, "usage"},
		{"no client certificate where one is required", n1.ServerConfig(true, nil), &tls.Config{InsecureSkipVerify: true}, false, "certificate"},
		{"no client certificate where optional", n1.ServerConfig(false, nil), &tls.Config{InsecureSkipVerify: true}, true, ""},
		{"caller to the API", n1.ServerConfig(true, nil), practice.ClientConfig(OnlyNodes), true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serr, cerr := handshake(t, tc.server, tc.client)
			if tc.ok {
				if serr != nil || cerr != nil {
					t.Fatalf("server %v, client %v", serr, cerr)
				}
				return
			}
			if serr == nil && cerr == nil {
				t.Fatal("handshake succeeded")
			}
			if !strings.Contains(errString(serr)+" "+errString(cerr), tc.want) {
				t.Fatalf("server %v, client %v; want %q", serr, cerr, tc.want)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestReloadFollowsRenewedCertificate(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	files := writeSet(t, dir, ca, "n1", node(t, ca, "n1"))
	s, err := NewSource(files, cl, nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	s.now = func() time.Time { return clock }
	first := s.current().cert.Leaf.SerialNumber

	// A half-written set is ignored and the old certificate stays.
	os.WriteFile(files.Key, []byte("garbage"), 0o600)
	clock = clock.Add(2 * checkEvery)
	if got := s.current().cert.Leaf.SerialNumber; got.Cmp(first) != 0 {
		t.Fatal("a broken key replaced the working certificate")
	}
	renewed := node(t, ca, "n1")
	os.WriteFile(files.Cert, renewed.CertPEM, 0o600)
	os.WriteFile(files.Key, renewed.KeyPEM, 0o600)
	clock = clock.Add(2 * checkEvery)
	if got := s.current().cert.Leaf.SerialNumber; got.Cmp(first) == 0 {
		t.Fatal("renewed certificate not picked up")
	}
}

func TestWriteDevSet(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	set := DevSet{Cluster: cl, Nodes: []string{"n1", "n2"}, Hosts: []string{"127.0.0.1"}, Callers: DefaultDevCallers()}
	if err := WriteDevSet(dir, set); err != nil {
		t.Fatal(err)
	}
	for _, c := range append([]string{"n1", "n2"}, "practice", "reader", "lmc-admin", "auditor") {
		if _, err := NewSource(Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, c+".pem"), Key: filepath.Join(dir, c+"-key.pem")}, cl, nil); err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		if fi, _ := os.Stat(filepath.Join(dir, c+"-key.pem")); fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s key mode %v", c, fi.Mode())
		}
	}
	if err := WriteDevSet(dir, set); err == nil {
		t.Fatal("a second run overwrote the CA")
	}
}
