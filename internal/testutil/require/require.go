// Package require holds the tests' guard against hollow green runs: a test
// that lacks root, a tool or a kernel feature skips with the reason, or
// fails under CI (STASIS_CI). It imports nothing of stasis, so that the
// tests of every package, those testutil itself imports included, can use
// it; testutil re-exports it.
package require

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// moduleRoot is the repository root, found from this file's location.
func moduleRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("require: runtime.Caller failed")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// CIEnv is the variable .ci/run exports. Under it a test that would skip
// for lack of root, a tool or a kernel feature fails instead: the CI
// machine has them all (DESIGN.md), so a skip there would be a green run
// that tested nothing.
const CIEnv = "STASIS_CI"

// CRIUEnv names the CRIU 4.2 reference binary when it is not at
// ../shared/tools/criu-4.2/criu from the checkout.
const CRIUEnv = "STASIS_CRIU"

// InCI reports whether the tests run under .ci/run.
func InCI() bool {
	v := os.Getenv(CIEnv)
	return v != "" && v != "0"
}

// SkipOrFail skips the test with the reason, or fails it under CI.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s (%s is set: CI must run every test, so this is a failure, not a skip)", msg, CIEnv)
	}
	t.Skip(msg)
}

// Root skips the test unless it runs as root (fails under CI):
// checkpoint and restore need ptrace of any process, clone3 with set_tid
// and /proc of every task.
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "needs root: stasis ptraces other processes and restores PIDs with clone3(set_tid)")
	}
}

// RootFor is Root with the test's own reason.
func RootFor(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "needs root: %s", why)
	}
}

// toolPackage is the Debian package .ci/run installs for a tool, for the
// skip message.
var toolPackage = map[string]string{
	"gcc": "gcc", "crit": "criu", "python3": "python3", "make": "make", "git": "git",
	"bzip2": "bzip2", "tar": "tar", "diff": "diffutils", "redis-server": "redis-server",
	"nginx": "nginx-light", "initdb": "postgresql", "postgres": "postgresql",
	"tmux": "tmux", "screen": "screen", "vim.basic": "vim", "top": "procps",
	"sshd": "openssh-server", "ssh": "openssh-client", "ssh-keygen": "openssh-client",
	"setpriv": "util-linux", "unshare": "util-linux", "setsid": "util-linux",
	"sleep": "coreutils", "sh": "dash", "protoc": "protobuf-compiler",
	"lxc-create": "lxc", "lxc-start": "lxc", "lxc-checkpoint": "lxc", "lxc-stop": "lxc", "lxc-destroy": "lxc", "lxc-info": "lxc",
	"busybox": "busybox-static",
	// The applications of issue 18.
	"mariadbd": "mariadb-server", "mariadb-install-db": "mariadb-server", "apache2": "apache2", "apachectl": "apache2",
}

// CITools are the programs the tests run, all of which CI must have.
var CITools = []string{"gcc", "crit", "python3", "make", "git", "bzip2", "tar", "diff",
	"redis-server", "nginx", "initdb", "postgres", "tmux", "screen", "vim.basic", "top",
	"sshd", "ssh", "ssh-keygen", "setpriv", "unshare", "protoc",
	"mariadbd", "mariadb-install-db", "apache2", "apachectl"}

// LookTool finds a program: on PATH, in /usr/sbin (sshd, nginx are not on
// a user's PATH), or for postgres' programs in Debian's
// /usr/lib/postgresql/VERSION/bin.
func LookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	cands := []string{"/usr/sbin/" + name, "/sbin/" + name}
	if name == "initdb" || name == "postgres" {
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		for i := len(dirs) - 1; i >= 0; i-- {
			cands = append(cands, filepath.Join(dirs[i], name))
		}
	}
	for _, p := range cands {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found on PATH nor in /usr/sbin: %w", name, exec.ErrNotFound)
}

// Tool returns the path of a program the test runs; without it the
// test skips (fails under CI) naming the package that provides it.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := LookTool(name)
	if err != nil {
		pkg := toolPackage[name]
		if pkg == "" {
			pkg = name
		}
		SkipOrFail(t, "%s is not installed (Debian package %s; .ci/run installs it)", name, pkg)
	}
	return p
}

// CRIUReference is the path of CRIU 4.2, the reference the tests compare
// with: $STASIS_CRIU, or ../shared/tools/criu-4.2/criu from the checkout.
func CRIUReference() (string, error) {
	p := os.Getenv(CRIUEnv)
	if p == "" {
		p = filepath.Join(moduleRoot(), "..", "shared", "tools", "criu-4.2", "criu")
	}
	st, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("criu 4.2 reference: %w (set %s to its path)", err, CRIUEnv)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("criu 4.2 reference %s: not an executable file", p)
	}
	return p, nil
}

// CRIU returns the CRIU 4.2 reference; without it the test skips
// (fails under CI).
func CRIU(t testing.TB) string {
	t.Helper()
	p, err := CRIUReference()
	if err != nil {
		SkipOrFail(t, "%v", err)
	}
	return p
}

// Missing lists what the CI environment should have and this machine
// lacks: root, each of CITools, python3-protobuf, the CRIU reference (and
// that it runs).
func Missing() []string {
	var miss []string
	if os.Geteuid() != 0 {
		miss = append(miss, fmt.Sprintf("root (euid is %d)", os.Geteuid()))
	}
	for _, name := range CITools {
		if _, err := LookTool(name); err != nil {
			miss = append(miss, fmt.Sprintf("%s (package %s)", name, toolPackage[name]))
		}
	}
	// crit 4.2 runs with Debian's python3 and its protobuf module.
	if out, err := exec.Command("/usr/bin/python3", "-c", "import google.protobuf").CombinedOutput(); err != nil {
		miss = append(miss, fmt.Sprintf("python3-protobuf for /usr/bin/python3 (%v): %s", err, strings.TrimSpace(string(out))))
	}
	if p, err := CRIUReference(); err != nil {
		miss = append(miss, err.Error())
	} else if out, err := exec.Command(p, "--version").CombinedOutput(); err != nil || !strings.Contains(string(out), "4.2") {
		miss = append(miss, fmt.Sprintf("a working %s --version (%v): %s", p, err, strings.TrimSpace(string(out))))
	}
	return miss
}
