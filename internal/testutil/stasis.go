package testutil

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil/require"
)

// Result is one finished run of the stasis binary.
type Result struct {
	Args           []string
	Code           int // exit code; -1 when killed at the timeout
	Stdout, Stderr string
	Took           time.Duration
	Log            string // the -o log file, "" if none
}

func (r Result) String() string {
	s := fmt.Sprintf("stasis %s: exit %d after %v", strings.Join(r.Args, " "), r.Code, r.Took.Round(time.Millisecond))
	if r.Stdout != "" {
		s += "\n--- stdout ---\n" + strings.TrimRight(r.Stdout, "\n")
	}
	if r.Stderr != "" {
		s += "\n--- stderr ---\n" + strings.TrimRight(r.Stderr, "\n")
	}
	if r.Log != "" {
		s += "\n--- " + r.Log + " (tail) ---\n" + tail(r.Log, 40)
	}
	return s
}

// MinRunTimeout is the shortest time Run and RunCRIU let a run take
// before they kill it: a dump or restore that takes a second alone may
// take ten beside three other tests on two cores.
const MinRunTimeout = 90 * time.Second

// Run runs the stasis binary to completion, killing it after timeout (at
// least MinRunTimeout).
func Run(t testing.TB, timeout time.Duration, args ...string) Result {
	t.Helper()
	return runUnder(t, timeout, nil, args...)
}

// runUnder is Run with the binary started through the command prefix
// (say prlimit with its options), which must exec it.
func runUnder(t testing.TB, timeout time.Duration, prefix []string, args ...string) Result {
	t.Helper()
	timeout = max(timeout, MinRunTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out, errb bytes.Buffer
	argv := append(append(append([]string{}, prefix...), StasisBin(t)), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := Result{Args: args, Stdout: out.String(), Stderr: errb.String(), Took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.Code = -1
		r.Stderr += fmt.Sprintf("\n(killed: still running after %v)", timeout)
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run stasis: %v", err)
	}
	return r
}

var (
	logMu   sync.Mutex
	logDirs = map[string]string{}
	logSeq  int
)

// logFile names a fresh log file for one stasis run, in a directory of the
// test's own (not the images dir: some tests need that one absent or broken).
func logFile(t testing.TB, verb string) string {
	logMu.Lock()
	defer logMu.Unlock()
	dir, ok := logDirs[t.Name()]
	if !ok {
		dir = t.TempDir()
		logDirs[t.Name()] = dir
		t.Cleanup(func() {
			logMu.Lock()
			delete(logDirs, t.Name())
			logMu.Unlock()
		})
	}
	logSeq++
	return filepath.Join(dir, fmt.Sprintf("%s-%d.log", verb, logSeq))
}

// Dump runs `stasis dump -t PID -D DIR -v4 -o LOG EXTRA...` and fails the
// test, quoting stderr and the log, unless it exits 0. DIR must exist.
func Dump(t testing.TB, pid int, dir string, extra ...string) Result {
	t.Helper()
	r := dump(t, pid, dir, extra...)
	if r.Code != 0 {
		t.Fatalf("dump of pid %d failed\n%s", pid, r)
	}
	t.Logf("dumped pid %d in %v", pid, r.Took.Round(time.Millisecond))
	return r
}

// DumpFail runs a dump that must fail: exit 1 with an "Error: " message on
// stderr, which it returns.
func DumpFail(t testing.TB, pid int, dir string, extra ...string) string {
	t.Helper()
	r := dump(t, pid, dir, extra...)
	checkFailed(t, r)
	return r.Stderr
}

func dump(t testing.TB, pid int, dir string, extra ...string) Result {
	t.Helper()
	log := logFile(t, "dump")
	args := append([]string{"dump", "-t", strconv.Itoa(pid), "-D", dir, "-v4", "-o", log}, extra...)
	r := Run(t, 90*time.Second, args...)
	r.Log = log
	return r
}

func checkFailed(t testing.TB, r Result) {
	t.Helper()
	if r.Code != 1 {
		t.Fatalf("want exit 1 and an error\n%s", r)
	}
	if !strings.HasPrefix(r.Stderr, "Error: ") {
		t.Fatalf("stderr does not start with \"Error: \"\n%s", r)
	}
	t.Logf("failed as expected: %s", strings.TrimSpace(r.Stderr))
}

// RestoreFail runs `stasis restore -D DIR -d` that must fail (exit 1 with an
// "Error: " message, returned) and leave no task behind: no new child of the
// test process (the subreaper would inherit any orphan).
func RestoreFail(t testing.TB, dir string, extra ...string) string {
	t.Helper()
	before := Children(os.Getpid())
	log := logFile(t, "restore")
	pidfile := log + ".pid"
	args := append([]string{"restore", "-D", dir, "-d", "--pidfile", pidfile, "-v4", "-o", log}, extra...)
	r := Run(t, 90*time.Second, args...)
	r.Log = log
	if r.Code == 0 {
		if b, err := os.ReadFile(pidfile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				killAndReap(pid)
			}
		}
	}
	checkFailed(t, r)
	checkNoNewChildren(t, before, dir)
	return r.Stderr
}

// AssertContains fails the test unless s contains every one of subs.
func AssertContains(t testing.TB, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("message %q does not name %q", strings.TrimSpace(s), sub)
		}
	}
}

// images lists the framed images of a dump: every *.img but the raw pages-*.
func images(t testing.TB, dir string) []string {
	t.Helper()
	all, err := filepath.Glob(filepath.Join(dir, "*.img"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range all {
		// Raw: pages, and tmpfs contents (a tar.gz, criu's tmpfs-dev-N.tar.gz.img).
		if b := filepath.Base(f); !strings.HasPrefix(b, "pages-") && !strings.HasPrefix(b, "tmpfs-") {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no images in %s", dir)
	}
	return out
}

// CritDecodeAll decodes every framed image of DIR with Debian's crit, an
// independent decoder. Without crit it logs that it could not, or fails
// under CI; it does not skip: the test it is called from has more to check
// after the dump.
func CritDecodeAll(t testing.TB, dir string) {
	t.Helper()
	crit, err := require.LookTool("crit")
	if err != nil {
		if InCI() {
			t.Errorf("crit is not installed (Debian package criu): images of %s not checked by an independent decoder (%s is set)", dir, CIEnv)
		} else {
			t.Logf("crit is not installed (Debian package criu): images not checked by an independent decoder")
		}
		return
	}
	files := images(t, dir)
	// One interpreter for all the images: `crit decode` starts python
	// and its protobuf modules for each (a second under load, half a
	// minute for a server's thirty images); a failure is decoded again
	// by crit itself, image by image, for its message.
	if py := critInterpreter(crit); py != "" {
		if exec.Command(py, append([]string{"-c", critDecodeBatch}, files...)...).Run() == nil {
			return
		}
	}
	for _, f := range files {
		out, err := exec.Command(crit, "decode", "-i", f).CombinedOutput()
		if err != nil {
			t.Errorf("crit decode -i %s: %v\n%s", filepath.Base(f), err, lastLines(string(out), 20))
		}
	}
}

// critDecodeBatch is what `crit decode -i F` does (pycriu's cli.decode),
// for each file named on its command line.
const critDecodeBatch = `
import json, sys
import pycriu
for f in sys.argv[1:]:
    with open(f, 'rb') as inf:
        json.dumps(pycriu.images.load(inf, False, False))
`

// critInterpreter is the interpreter of the crit script (its #! line), or ""
// if crit is not a python script.
func critInterpreter(crit string) string {
	f, err := os.Open(crit)
	if err != nil {
		return ""
	}
	defer f.Close()
	b := make([]byte, 128)
	n, _ := f.Read(b)
	line, _, _ := strings.Cut(string(b[:n]), "\n")
	py, ok := strings.CutPrefix(line, "#!")
	if py = strings.TrimSpace(py); !ok || !strings.Contains(filepath.Base(py), "python") || strings.Contains(py, " ") {
		return ""
	}
	return py
}

// ShowAll decodes every framed image with `stasis show` and checks the JSON
// shape {"magic": NAME, "entries": [...]} with at least one entry.
func ShowAll(t testing.TB, dir string) {
	t.Helper()
	for _, f := range images(t, dir) {
		r := Run(t, 10*time.Second, "show", f)
		if r.Code != 0 {
			t.Errorf("show %s failed\n%s", filepath.Base(f), r)
			continue
		}
		var img struct {
			Magic   string            `json:"magic"`
			Entries []json.RawMessage `json:"entries"`
		}
		if err := json.Unmarshal([]byte(r.Stdout), &img); err != nil {
			t.Errorf("show %s: not JSON: %v\n%s", filepath.Base(f), err, lastLines(r.Stdout, 10))
			continue
		}
		if img.Magic == "" || len(img.Entries) == 0 {
			t.Errorf("show %s: magic %q and %d entries", filepath.Base(f), img.Magic, len(img.Entries))
		}
	}
}

// CheckImages decodes a dump with both decoders.
func CheckImages(t testing.TB, dir string) {
	t.Helper()
	ShowAll(t, dir)
	CritDecodeAll(t, dir)
}
