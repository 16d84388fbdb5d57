package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/lmc-consent/consentd/pki"
)

const certsUsage = `consentd certs makes a development CA and certificates in --dir: one per
node (valid for --hosts) and one sample caller per role:
  practice.pem    practice Y00001 (gp-system-a)     record and read
  practice-b.pem  practice Y00002 (gp-system-b)     record and read
  reader.pem      reader RR801 (ooh-service)        read only
  lmc-admin.pem   lmc_admin LMC01 (lmc-operator)    cluster operations, entered-in-error
  auditor.pem     auditor LMC01 (caldicott-guardian) restricted reasons, access log
Each has its -key.pem (mode 0600); ca.pem is the CA. The CA key is kept in
ca-key.pem: fine for development, never for a real cluster.

Usage:
  consentd certs --dir DIR [--nodes n1,n2,n3] [--hosts 127.0.0.1,localhost] [--cluster consentd]

Flags:
`

func runCerts(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("consentd certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, certsUsage); fs.PrintDefaults() }
	var (
		dir     = fs.String("dir", "", "folder to create (required; must not hold a CA already)")
		nodes   = fs.String("nodes", "n1,n2,n3", "comma-separated node ids")
		hosts   = fs.String("hosts", "127.0.0.1,localhost", "addresses and names every node certificate is valid for")
		cluster = fs.String("cluster", "consentd", "cluster name (the spiffe:// trust domain); nodes take the same --cluster")
	)
	if err := parseWithEnv(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *dir == "" {
		fmt.Fprintln(stderr, "consentd certs: --dir is required")
		return 2
	}
	set := pki.DevSet{Cluster: *cluster, Nodes: splitList(*nodes), Hosts: splitList(*hosts), Callers: pki.DefaultDevCallers()}
	if err := pki.WriteDevSet(*dir, set); err != nil {
		fmt.Fprintln(stderr, "consentd certs:", err)
		return 1
	}
	fmt.Fprintf(stdout, "consentd certs: CA, nodes %s and callers (%s) written to %s\n",
		strings.Join(set.Nodes, ", "), callerNames(set.Callers), *dir)
	return 0
}

func callerNames(cs []pki.DevCaller) string {
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return strings.Join(names, ", ")
}
