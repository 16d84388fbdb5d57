package jepsen

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// certCaller is the file stem of a caller certificate `consentd certs`
// writes; the stem names the role.
type certCaller string

// The callers the suite uses: the workload records and reads as a
// practice, the controller's status polls and final reads need no more
// than a reader, and membership changes need an LMC administrator.
const (
	callerPractice certCaller = "practice"
	callerReader   certCaller = "reader"
	callerLMCAdmin certCaller = "lmc-admin"
)

// certDir is a folder written by `consentd certs`.
type certDir string

func (d certDir) ca() string { return filepath.Join(string(d), "ca.pem") }

// node is the certificate and key of a raft id.
func (d certDir) node(id string) (cert, key string) {
	return filepath.Join(string(d), id+".pem"), filepath.Join(string(d), id+"-key.pem")
}

func (d certDir) caller(c certCaller) (cert, key string) {
	return filepath.Join(string(d), string(c)+".pem"), filepath.Join(string(d), string(c)+"-key.pem")
}

// nodeArgs are the consentd flags that run raft id on TLS with its own
// certificate; rate limiting is off so the workload is not throttled.
func (d certDir) nodeArgs(id string) []string {
	cert, key := d.node(id)
	return []string{"--ca-file", d.ca(), "--cert-file", cert, "--key-file", key, "--rate-limit", "-1"}
}

// clientConfig is a caller's mutual TLS configuration: its certificate,
// and the run's CA as the only root. Nodes are dialled by IP, which their
// certificates carry.
func (d certDir) clientConfig(c certCaller) (*tls.Config, error) {
	pemCA, err := os.ReadFile(d.ca())
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemCA) {
		return nil, fmt.Errorf("jepsen: no certificate in %s", d.ca())
	}
	cert, key := d.caller(c)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("jepsen: caller %s: %w", c, err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, Certificates: []tls.Certificate{pair}}, nil
}

// callerTLS holds one client configuration per use; all nil on plain TCP.
type callerTLS struct {
	workload, control, admin *tls.Config
}

func (d certDir) callerTLS() (callerTLS, error) {
	var out callerTLS
	var errs []error
	for _, p := range []struct {
		c   certCaller
		dst **tls.Config
	}{{callerPractice, &out.workload}, {callerReader, &out.control}, {callerLMCAdmin, &out.admin}} {
		conf, err := d.clientConfig(p.c)
		errs = append(errs, err)
		*p.dst = conf
	}
	return out, errors.Join(errs...)
}

// certNodeIDs are the raft ids that need a node certificate: every slot,
// and each slot's next replacements ids (the membership nemesis gives a
// slot a fresh id each time it replaces its member).
func certNodeIDs(slots []string, replacements int) []string {
	var out []string
	for _, s := range slots {
		for gen := 0; gen <= replacements; gen++ {
			out = append(out, replacementID(s, gen))
		}
	}
	return out
}

// replacementsBound is how many times a schedule can replace one slot's
// member: each membership step replaces at most one, and a replacement
// whose start failed takes the next id on its retry, so a little spare.
func replacementsBound(steps []Step) int {
	n := 0
	for _, st := range steps {
		if st.Fault == Membership {
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return n + 2
}
