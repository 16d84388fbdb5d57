// Package archtest enforces the layout of DESIGN.md §1: which of our packages
// may import which, what the register may never import, and that every
// package says what it owns.
package archtest

import (
	"encoding/json"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/lmc-consent/consentd"

type pkg struct {
	ImportPath string
	Doc        string
	Imports    []string
	Name       string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 8 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

// allowed lists, per package prefix, the prefixes of our packages it may
// import. The first matching rule applies.
var allowed = []struct {
	pkg   string
	ours  []string
	never []string
}{
	{pkg: "proto", ours: []string{"proto/"}},
	{pkg: "fsm", ours: []string{"proto/command/"},
		never: []string{"google.golang.org/grpc", "net/http", "net", "github.com/hashicorp/raft", "math/rand", "crypto/rand"}},
	// internal/broken is the deliberately broken variants' switch; which
	// packages may hook it is narrower still, see TestBrokenHooks.
	{pkg: "raftnode", ours: []string{"internal/broken"}},
	{pkg: "cluster", ours: []string{"raftnode", "proto/", "internal/broken"}},
	{pkg: "api", ours: []string{"fsm", "raftnode", "cluster", "proto/", "pki", "audit", "internal/broken"},
		never: []string{"github.com/hashicorp/raft"}},
	{pkg: "node", ours: []string{"fsm", "raftnode", "cluster", "api", "proto/", "pki", "audit"}},
	// pki is standard library only: certificates and identities.
	{pkg: "pki", ours: nil},
	// audit is standard library only: the access log.
	{pkg: "audit", ours: nil},
	{pkg: "cmd/", ours: []string{""}},
	{pkg: "e2e", ours: []string{"proto/", "fsm"}},
	// The benchmarks drive real binaries: they borrow the NHS number rules,
	// the public API's generated client and their own helpers, nothing of
	// the node's inside.
	{pkg: "bench/", ours: []string{"fsm", "proto/consent/", "bench/"}},
	{pkg: "internal/broken", ours: nil},
	{pkg: "internal/", ours: []string{""}},
}

// brokenHooks are the only packages whose production code may switch on a
// broken variant (internal/broken); test files are not counted.
var brokenHooks = map[string]bool{"raftnode": true, "cluster": true, "api": true}

func rel(path string) string { return strings.TrimPrefix(strings.TrimPrefix(path, module), "/") }

func TestImportRules(t *testing.T) {
	for _, p := range listPackages(t) {
		r := rel(p.ImportPath)
		matched := false
		for _, rule := range allowed {
			if r != rule.pkg && !strings.HasPrefix(r, strings.TrimSuffix(rule.pkg, "/")+"/") {
				continue
			}
			matched = true
			for _, imp := range p.Imports {
				for _, bad := range rule.never {
					if imp == bad || strings.HasPrefix(imp, bad+"/") {
						t.Errorf("%s imports %s, which it must never do", r, imp)
					}
				}
				if !strings.HasPrefix(imp, module+"/") {
					continue
				}
				ok := false
				for _, a := range rule.ours {
					target := rel(imp)
					if a == "" || target == strings.TrimSuffix(a, "/") || strings.HasPrefix(target, a) {
						ok = true
					}
				}
				if !ok {
					t.Errorf("%s imports %s; DESIGN.md §1 does not allow it", r, rel(imp))
				}
			}
			break
		}
		if !matched {
			t.Errorf("package %s has no import rule here: add one", r)
		}
	}
}

func TestBrokenHooks(t *testing.T) {
	for _, p := range listPackages(t) {
		r := rel(p.ImportPath)
		for _, imp := range p.Imports {
			if rel(imp) == "internal/broken" && !brokenHooks[r] {
				t.Errorf("%s imports internal/broken; only %v may hook a broken variant", r, sortedKeys(brokenHooks))
			}
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestEveryPackageSaysWhatItOwns(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc comment", rel(p.ImportPath))
		}
	}
}
