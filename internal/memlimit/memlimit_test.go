package memlimit

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

// fakeSources lays out /proc/self/cgroup and a cgroup tree in a temp dir.
func fakeSources(t *testing.T, procCgroup string, files map[string]string) Sources {
	t.Helper()
	dir := t.TempDir()
	s := Sources{ProcSelfCgroup: filepath.Join(dir, "proc-self-cgroup"), CgroupRoot: filepath.Join(dir, "cgroup")}
	if err := os.WriteFile(s.ProcSelfCgroup, []byte(procCgroup), 0o644); err != nil {
		t.Fatal(err)
	}
	for rel, content := range files {
		p := filepath.Join(s.CgroupRoot, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestCgroupLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		proc  string
		files map[string]string
		want  int64
	}{
		{"v2 with a limit", "0::/lmc/node1\n", map[string]string{"lmc/node1/memory.max": "314572800\n"}, 314572800},
		{"v2 unlimited", "0::/lmc/node1\n", map[string]string{"lmc/node1/memory.max": "max\n"}, 0},
		{"v2 at the root", "0::/\n", map[string]string{"memory.max": "1073741824\n"}, 1073741824},
		{"v2 without the file (root cgroup)", "0::/\n", nil, 0},
		{"v1 memory controller", "12:pids:/x\n4:memory:/docker/abc\n1:name=systemd:/y\n",
			map[string]string{"memory/docker/abc/memory.limit_in_bytes": "536870912\n"}, 536870912},
		{"v1 unlimited is a huge number", "4:memory:/\n",
			map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0},
		{"v1 controllers listed together", "3:cpu,memory:/a\n", map[string]string{"memory/a/memory.limit_in_bytes": "1000\n"}, 1000},
		{"hybrid: v2 file absent, v1 present", "0::/u\n5:memory:/m\n", map[string]string{"memory/m/memory.limit_in_bytes": "2000\n"}, 2000},
		{"no memory cgroup", "12:pids:/x\n", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := fakeSources(t, tc.proc, tc.files).CgroupLimit()
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("CgroupLimit = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestCgroupLimitRejectsGarbage(t *testing.T) {
	s := fakeSources(t, "0::/n\n", map[string]string{"n/memory.max": "lots\n"})
	if _, err := s.CgroupLimit(); err == nil {
		t.Fatal("a memory.max that is not a number was accepted")
	}
}

func TestCgroupLimitWithoutProc(t *testing.T) {
	s := Sources{ProcSelfCgroup: filepath.Join(t.TempDir(), "absent"), CgroupRoot: t.TempDir()}
	if got, err := s.CgroupLimit(); err != nil || got != 0 {
		t.Fatalf("= %d, %v; want 0, nil", got, err)
	}
}

func TestApply(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	capped := fakeSources(t, "0::/n\n", map[string]string{"n/memory.max": "314572800\n"})
	noEnv := func(string) string { return "" }

	debug.SetMemoryLimit(math.MaxInt64)
	d, err := capped.Apply(0.8, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if d.Cgroup != 314572800 || d.Limit != 251658240 {
		t.Fatalf("decision %+v, want the cap and 80%% of it", d)
	}
	if got := debug.SetMemoryLimit(-1); got != 251658240 {
		t.Fatalf("runtime soft limit %d, want 251658240", got)
	}

	debug.SetMemoryLimit(math.MaxInt64)
	d, err = capped.Apply(0.8, func(k string) string {
		if k == "GOMEMLIMIT" {
			return "100MiB"
		}
		return ""
	})
	if err != nil || d.Limit != 0 || d.Reason == "" {
		t.Fatalf("with GOMEMLIMIT set: %+v, %v; want it left alone", d, err)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("GOMEMLIMIT set, yet the limit changed to %d", got)
	}

	for _, f := range []float64{0, -1, 1.5} {
		if _, err := capped.Apply(f, noEnv); err == nil {
			t.Errorf("fraction %v accepted", f)
		}
	}
}
