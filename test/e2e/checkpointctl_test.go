package e2e

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// checkpointctl (github.com/checkpoint-restore/checkpointctl, the
// checkpoint-restore project's tool) reads podman's checkpoint archives:
// stasis's must show as criu 4.2's do.

// checkpointctlVersion is the release the test builds (go install,
// through the Go module proxy), once per machine.
const checkpointctlVersion = "v1.4.0"

// checkpointctl returns checkpointctl: on $PATH, or built into the user's
// cache directory.
func checkpointctl(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("checkpointctl"); err == nil {
		return p
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	bin := filepath.Join(cache, "stasis-test-tools", "checkpointctl@"+checkpointctlVersion)
	if _, err := os.Stat(filepath.Join(bin, "checkpointctl")); err == nil {
		return filepath.Join(bin, "checkpointctl")
	}
	start := time.Now()
	cmd := exec.Command("go", "install", "github.com/checkpoint-restore/checkpointctl@"+checkpointctlVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		testutil.SkipOrFail(t, "go install checkpointctl@%s: %v\n%s", checkpointctlVersion, err, out)
	}
	t.Logf("built checkpointctl %s in %v", checkpointctlVersion, time.Since(start).Round(time.Second))
	return filepath.Join(bin, "checkpointctl")
}

// extractFile returns the file name of a gzip'd tar archive.
func extractFile(t *testing.T, archive, name string) []byte {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", archive, err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: no %s in it: %v", archive, name, err)
		}
		if filepath.Clean(h.Name) == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// dumpStats decodes the stats-dump of an export and returns the names of
// the fields it sets.
func dumpStats(t *testing.T, archive string) []string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "stats-dump"), extractFile(t, archive, "stats-dump"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var e stats.StatsEntry
	if err := d.ReadOne("stats-dump", &e); err != nil {
		t.Fatalf("stats-dump of %s: %v", archive, err)
	}
	var set []string
	m := e.GetDump().ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		if m.Has(fields.Get(i)) {
			set = append(set, string(fields.Get(i).Name()))
		}
	}
	return set
}

// compareExportStats: the stats-dump podman put into stasis's export has
// every field criu 4.2's has.
func compareExportStats(t *testing.T, ours, criu string) {
	got, want := dumpStats(t, ours), dumpStats(t, criu)
	have := map[string]bool{}
	for _, f := range got {
		have[f] = true
	}
	for _, f := range want {
		if !have[f] {
			t.Errorf("stasis's stats-dump lacks %s (criu 4.2's has %v)", f, want)
		}
	}
}

// inspectJSON runs checkpointctl inspect --all --format json on archive.
func inspectJSON(t *testing.T, ctl, archive string) map[string]any {
	t.Helper()
	var stderr strings.Builder
	cmd := exec.Command(ctl, "inspect", "--all", "--format", "json", archive)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("checkpointctl inspect --all %s: %v\n%s%s", archive, err, out, stderr.String())
	}
	var v []map[string]any
	if err := json.Unmarshal(out, &v); err != nil || len(v) != 1 {
		t.Fatalf("checkpointctl inspect --all %s: %v\n%s", archive, err, out)
	}
	return v[0]
}

func keys(v any) []string {
	m, _ := v.(map[string]any)
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// rootFiles lists the descriptors checkpointctl shows for the container's
// pid 1.
func rootFiles(v map[string]any) []string {
	fds, _ := v["file_descriptors"].([]any)
	for _, p := range fds {
		p, _ := p.(map[string]any)
		if pid, _ := p["pid"].(float64); pid != 1 {
			continue
		}
		var out []string
		files, _ := p["open_files"].([]any)
		for _, f := range files {
			f, _ := f.(map[string]any)
			fd, _ := f["fd"].(string)
			out = append(out, fd)
		}
		sort.Strings(out)
		return out
	}
	return nil
}

// steadyFiles keeps the descriptors that counterScript's shell holds all
// along (0, 2, its tick fifo 9, cwd, root): its loop's redirection (echo
// $i > /count) opens the file on fd 3, moves it to fd 1 and puts fd 1 back,
// and a checkpoint may freeze the shell in the middle (criu's export had
// a REG 3 once, stasis' not, at load 10).
func steadyFiles(fds []string) []string {
	var out []string
	for _, fd := range fds {
		f := strings.Fields(fd)
		if len(f) == 0 {
			continue
		}
		switch f[len(f)-1] {
		case "0", "2", "9", "cwd", "root":
			out = append(out, fd)
		}
	}
	return out
}

// checkpointctlCompare: checkpointctl show and inspect --all read
// stasis's export and show what they show of criu 4.2's: the same
// sections, statistics, process tree root, descriptors and mounts.
func checkpointctlCompare(t *testing.T, ours, criu string) {
	ctl := checkpointctl(t)
	for _, a := range []string{ours, criu} {
		out, err := exec.Command(ctl, "show", a).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "stasis-podman-") || !strings.Contains(string(out), "runc") {
			t.Errorf("checkpointctl show %s: %v\n%s", a, err, out)
		}
	}
	got, want := inspectJSON(t, ctl, ours), inspectJSON(t, ctl, criu)
	if g, w := strings.Join(keys(got), " "), strings.Join(keys(want), " "); g != w {
		t.Errorf("checkpointctl inspect: stasis's export shows %s, criu's %s", g, w)
	}
	if g, w := strings.Join(keys(got["statistics"]), " "), strings.Join(keys(want["statistics"]), " "); g != w {
		t.Errorf("checkpointctl statistics: stasis's export shows %s, criu's %s", g, w)
	}
	cmd := func(v map[string]any) any { return v["process_tree"].(map[string]any)["command"] }
	if _, ok := got["process_tree"].(map[string]any); !ok {
		t.Fatalf("checkpointctl shows no process tree of stasis's export: %v", got)
	}
	if g, w := cmd(got), cmd(want); g != w {
		t.Errorf("checkpointctl process tree root: stasis's export %v, criu's %v", g, w)
	}
	if g, w := strings.Join(steadyFiles(rootFiles(got)), " "), strings.Join(steadyFiles(rootFiles(want)), " "); g != w || g == "" {
		t.Errorf("checkpointctl descriptors of pid 1: stasis's export %q, criu's %q", g, w)
	}
	gm, _ := got["mounts"].([]any)
	wm, _ := want["mounts"].([]any)
	if len(gm) != len(wm) || len(gm) == 0 {
		t.Errorf("checkpointctl mounts: stasis's export %d, criu's %d", len(gm), len(wm))
	}
	st, _ := got["statistics"].(map[string]any)
	if w, _ := st["pages_written"].(float64); w == 0 {
		t.Errorf("checkpointctl statistics of stasis's export: no pages written: %v", st)
	}
	t.Logf("checkpointctl: stasis's export shows %v; statistics %v", keys(got), st)
}
