package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	buildMu  sync.Mutex
	buildDir string                // per test-binary run, removed by RemoveBuilds
	built    = map[string]string{} // victim name -> binary
	stasis   string                // the binary built by BuildStasis
)

// ModuleRoot is the repository root, found from this file's location so that
// it does not depend on the working directory of the test binary.
func ModuleRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("testutil: runtime.Caller failed")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func buildTmp() (string, error) {
	if buildDir == "" {
		d, err := os.MkdirTemp("", "stasis-e2e-")
		if err != nil {
			return "", err
		}
		buildDir = d
	}
	return buildDir, nil
}

// BuildStasis builds ./cmd/stasis once for this test binary run; the helpers
// that run stasis use it. Call it from TestMain.
func BuildStasis() (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if stasis != "" {
		return stasis, nil
	}
	dir, err := buildTmp()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "stasis")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/stasis")
	cmd.Dir = ModuleRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/stasis: %w\n%s", err, out)
	}
	stasis = bin
	return bin, nil
}

// StasisBin is the binary built by BuildStasis.
func StasisBin(t testing.TB) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if stasis == "" {
		t.Fatal("testutil: BuildStasis was not called (TestMain)")
	}
	return stasis
}

// RemoveBuilds deletes the binaries built during this run.
func RemoveBuilds() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// BuildVictim compiles test/victims/NAME.c with gcc -O1 -g, once per run,
// and returns the binary's path.
func BuildVictim(t testing.TB, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := built[name]; ok {
		return bin
	}
	dir, err := buildTmp()
	if err != nil {
		t.Fatalf("build victim %s: %v", name, err)
	}
	gcc := RequireTool(t, "gcc")
	src := filepath.Join(ModuleRoot(), "test", "victims", name+".c")
	bin := filepath.Join(dir, name)
	out, err := exec.Command(gcc, "-O1", "-g", "-Wall", "-o", bin, src).CombinedOutput()
	if err != nil {
		t.Fatalf("gcc %s: %v\n%s", src, err, out)
	}
	built[name] = bin
	return bin
}
