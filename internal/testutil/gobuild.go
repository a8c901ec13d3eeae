package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BuildGoVictim builds test/victims/NAME (a Go main package) with
// CGO_ENABLED=0, once per run, and returns the binary's path.
func BuildGoVictim(t testing.TB, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	key := "go:" + name
	if bin, ok := built[key]; ok {
		return bin
	}
	dir, err := buildTmp()
	if err != nil {
		t.Fatalf("build victim %s: %v", name, err)
	}
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin, "./test/victims/"+name)
	cmd.Dir = ModuleRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./test/victims/%s: %v\n%s", name, err, out)
	}
	built[key] = bin
	return bin
}
