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
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/netlock"
)

// CRIU returns the CRIU 4.2 reference binary (RequireCRIU): without it
// the test is skipped, except under CI, where it must be there.
func CRIU(t testing.TB) string {
	t.Helper()
	return RequireCRIU(t)
}

// RunCRIU runs the CRIU reference with args in dir, logging at -v4 to
// LOG in the test's log dir, and returns the result with the log's tail.
func RunCRIU(t testing.TB, timeout time.Duration, dir string, args ...string) Result {
	t.Helper()
	return RunCRIUFiles(t, timeout, dir, nil, args...)
}

// RunCRIUFiles is RunCRIU with files given to criu as fds 3, 4, ...
// (for --inherit-fd). It kills criu after timeout (at least
// MinRunTimeout).
func RunCRIUFiles(t testing.TB, timeout time.Duration, dir string, files []*os.File, args ...string) Result {
	t.Helper()
	timeout = max(timeout, MinRunTimeout)
	bin := CRIU(t)
	log := logFile(t, "criu-"+args[0])
	// criu's -o is a name in its work dir: make that the log's dir.
	args = append(args, "-v4", "-W", filepath.Dir(log), "-o", filepath.Base(log))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.ExtraFiles = files
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	if args[0] == "dump" || args[0] == "pre-dump" {
		removeCRIULockAtEnd(t, log)
	}
	r := Result{Args: append([]string{"(criu 4.2)"}, args...), Stdout: out.String(), Stderr: errb.String(), Took: time.Since(start), Log: log}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.Code = -1
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run criu: %v", err)
	}
	return r
}

// removeCRIULockAtEnd removes at the end of the test the network lock a
// criu dump left if nothing restored its images (a failed dump, a dump
// only looked at): left behind, every such table makes each later nft
// call of the machine slower (150 of them: 6 s a `nft list ruleset`).
// criu's log names the run id its table is named after.
func removeCRIULockAtEnd(t testing.TB, log string) {
	b, _ := os.ReadFile(log)
	_, rest, ok := strings.Cut(string(b), "CRIU run id = ")
	if !ok {
		return
	}
	id, _, _ := strings.Cut(rest, "\n")
	t.Cleanup(func() {
		if err := netlock.UnlockRun(strings.TrimSpace(id)); err != nil {
			t.Logf("remove criu's network lock of run %s: %v", id, err)
		}
	})
}

// CriuErrors returns the "Error" lines of a criu log, the first reason
// a criu run failed.
func CriuErrors(log string) string {
	b, _ := os.ReadFile(log)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "Error") && !strings.Contains(l, "RLIMIT_NOFILE") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// CriuDump dumps pid into dir with the CRIU reference, failing the test
// unless it succeeds.
func CriuDump(t testing.TB, pid int, dir string, extra ...string) {
	t.Helper()
	r := RunCRIU(t, 90*time.Second, dir, append([]string{"dump", "-t", strconv.Itoa(pid), "-D", dir}, extra...)...)
	if r.Code != 0 {
		t.Fatalf("criu 4.2 dump of pid %d failed (exit %d): %s\n%s", pid, r.Code, CriuErrors(r.Log), r)
	}
	t.Logf("criu 4.2 dumped pid %d in %v", pid, r.Took.Round(time.Millisecond))
}

// CriuRestoreDetached restores dir with the CRIU reference (`restore -d`):
// the task runs again under its pid as a child of the test process
// (subreaper) once criu has exited, like RestoreDetached.
func CriuRestoreDetached(t testing.TB, dir string, v *Victim, extra ...string) {
	t.Helper()
	v.expectEnded(t)
	pidfile := filepath.Join(t.TempDir(), "criu.pid")
	r := RunCRIU(t, 90*time.Second, dir, append([]string{"restore", "-D", dir, "-d", "--pidfile", pidfile}, extra...)...)
	if r.Code != 0 {
		t.Fatalf("criu 4.2 restore of pid %d failed (exit %d): %s\n%s", v.Pid, r.Code, CriuErrors(r.Log), r)
	}
	v.restore, v.done, v.exited = nil, false, make(chan int, 1)
	go waitPid(v.Pid, v.exited)
	if !v.restoredWithin(pidfile, 10*time.Second) {
		st, _ := Status(v.Pid)
		t.Fatalf("criu restore -d exited 0 but pid %d is not back: comm %q (want %q), state %q", v.Pid, Comm(v.Pid), v.Comm, st["State"])
	}
	t.Logf("criu 4.2 restored pid %d in %v", v.Pid, r.Took.Round(time.Millisecond))
}

// compareShow fails on any value that differs between what `stasis show`
// prints for the image f and crit's JSON for it.
func compareShow(t testing.TB, f string, critJSON []byte) {
	t.Helper()
	r := Run(t, 10*time.Second, "show", f)
	if r.Code != 0 {
		t.Errorf("stasis show %s: exit %d\n%s", filepath.Base(f), r.Code, r)
		return
	}
	var ours, theirs any
	if err := json.Unmarshal([]byte(r.Stdout), &ours); err != nil {
		t.Fatalf("stasis show %s: %v", filepath.Base(f), err)
	}
	if err := json.Unmarshal(critJSON, &theirs); err != nil {
		t.Fatalf("crit show %s: %v", filepath.Base(f), err)
	}
	for _, d := range jsonDiff("", ours, theirs) {
		t.Errorf("%s: %s", filepath.Base(f), d)
	}
}

// jsonDiff lists where a (stasis) differs from b (crit).
func jsonDiff(path string, a, b any) []string {
	switch bv := b.(type) {
	case map[string]any:
		av, ok := a.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: stasis %v, crit an object", path, a)}
		}
		var out []string
		for k, v := range av {
			if _, ok := bv[k]; !ok {
				out = append(out, fmt.Sprintf("%s/%s: not in crit show (stasis: %v)", path, k, v))
			}
		}
		for k, v := range bv {
			x, ok := av[k]
			if !ok {
				out = append(out, fmt.Sprintf("%s/%s: missing in stasis show (crit: %v)", path, k, v))
				continue
			}
			out = append(out, jsonDiff(path+"/"+k, x, v)...)
		}
		return out
	case []any:
		av, ok := a.([]any)
		if !ok || len(av) != len(bv) {
			return []string{fmt.Sprintf("%s: stasis %v, crit %v", path, a, b)}
		}
		var out []string
		for i := range bv {
			out = append(out, jsonDiff(fmt.Sprintf("%s/%d", path, i), av[i], bv[i])...)
		}
		return out
	}
	if fmt.Sprint(a) != fmt.Sprint(b) {
		return []string{fmt.Sprintf("%s: stasis %v, crit %v", path, a, b)}
	}
	return nil
}

// CRIUWorkDir is the work dir (-W) RunCRIU gives criu in this test: where
// criu writes stats-dump and stats-restore beside its logs.
func CRIUWorkDir(t testing.TB) string {
	t.Helper()
	return filepath.Dir(logFile(t, "criu-work"))
}

// RemoveCRIULockAtEnd is removeCRIULockAtEnd for a criu log a test got
// otherwise (a swrk request's log_file, runc's dump.log).
func RemoveCRIULockAtEnd(t testing.TB, log string) { removeCRIULockAtEnd(t, log) }
