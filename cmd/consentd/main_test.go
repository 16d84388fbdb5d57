package main

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

func TestRunRefusesBadStarts(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		code int
		want string
	}{
		{"no id", []string{"--data-dir", "x", "--insecure"}, nil, 2, "missing --id"},
		{"no data dir", []string{"--id", "n1", "--insecure"}, nil, 2, "missing --data-dir"},
		{"no tls and no insecure", []string{"--id", "n1", "--data-dir", "x"}, nil, 2, "no certificate: give --ca-file"},
		{"tls and insecure", []string{"--id", "n1", "--data-dir", "x", "--insecure", "--ca-file", "ca.pem"}, nil, 2, "exclusive"},
		{"half the certificate flags", []string{"--id", "n1", "--data-dir", "x", "--ca-file", "ca.pem"}, nil, 2, "--cert-file is required"},
		{"unreadable certificate files", []string{"--id", "n1", "--data-dir", "x", "--ca-file", "/nonexistent/ca.pem", "--cert-file", "c", "--key-file", "k",
			"--peer-ca-file", "p"}, nil, 2, "no such file"},
		{"certs without dir", []string{"certs"}, nil, 2, "--dir is required"},
		{"bad env value", []string{"--id", "n1", "--data-dir", "x"}, map[string]string{"CONSENTD_INSECURE": "maybe"}, 2, "CONSENTD_INSECURE"},
		{"stray argument", []string{"--id", "n1", "extra"}, nil, 2, "unexpected argument"},
		{"bad log level", []string{"--id", "n1", "--data-dir", "x", "--insecure", "--log-level", "loud"}, nil, 2, "--log-level"},
		{"zero snapshot log", []string{"--id", "n1", "--data-dir", "x", "--insecure", "--snapshot-log-mib", "0"}, nil, 2, "--snapshot-log-mib 0 must be"},
		{"negative quiet snapshot", []string{"--id", "n1", "--data-dir", "x", "--insecure", "--snapshot-when-quiet", "-1s"}, nil, 2, "--snapshot-when-quiet -1s must not be negative"},
		{"dev bad nodes", []string{"dev", "--nodes", "0"}, nil, 2, "--nodes must be"},
		{"help", []string{"--help"}, nil, 0, "CONSENTD_"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var out, errOut bytes.Buffer
			code := run(tc.args, &out, &errOut)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, errOut.String())
			}
			if !strings.Contains(out.String()+errOut.String(), tc.want) {
				t.Fatalf("output lacks %q:\n%s%s", tc.want, out.String(), errOut.String())
			}
		})
	}
}

func TestEnvironmentFillsUnsetFlagsOnly(t *testing.T) {
	t.Setenv("CONSENTD_DATA_DIR", "/from/env")
	t.Setenv("CONSENTD_ID", "env-id")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	dir := fs.String("data-dir", "", "")
	id := fs.String("id", "", "")
	if err := parseWithEnv(fs, []string{"--id", "flag-id"}); err != nil {
		t.Fatal(err)
	}
	if *dir != "/from/env" || *id != "flag-id" {
		t.Fatalf("data-dir %q id %q: the command line must win over the environment", *dir, *id)
	}
}
