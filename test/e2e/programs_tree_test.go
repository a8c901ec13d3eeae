package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
	"golang.org/x/sys/unix"
)

// bashLoop forks a sleep every 0.2 s and writes how many it ran to $0.
const bashLoop = `i=0; while :; do sleep 0.2; i=$((i+1)); echo $i > "$0"; done`

// TestBashForkLoop: bash running a loop that forks `sleep` children (no
// pipes: stdin /dev/null, stdout and stderr a log file) is dumped with
// whatever child it has at that moment; after the restore it waits for that
// child and goes on forking, and the counter it writes continues from the
// dumped value, never from 0.
func TestBashForkLoop(t *testing.T) {
	testutil.RequireRoot(t)
	file := filepath.Join(t.TempDir(), "count")
	v := testutil.StartProgram(t, program(t, "bash"), "-c", bashLoop, file)
	killForkingTree(t, v)
	testutil.WaitFor(t, 5*time.Second, "bash to count to 3", func() bool {
		return fileExists(file) && readIntFile(t, file) >= 3
	})
	// Dump while bash waits for a sleep: its child is part of the tree.
	testutil.WaitFor(t, 2*time.Second, "bash to have a sleep child", func() bool {
		ts, err := testutil.Tree(v.Pid)
		return err == nil && len(ts) == 2 && ts[1].Comm == "sleep" && !ts[1].Zombie()
	})
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	pids := testutil.ImagePids(t, dir)
	t.Logf("dumped bash with %d process(es): %v", len(pids), pids)
	testutil.ReapTasks(t, pids[1:])
	at := readIntFile(t, file)
	testutil.CheckImages(t, dir)

	// No TrackTree: it would kill bash before the sleep it forks next;
	// killForkingTree stops bash first.
	testutil.RestoreDetached(t, dir, v)
	start := time.Now()
	n := at
	for time.Since(start) < 1500*time.Millisecond {
		if n = readIntFile(t, file); n < at {
			t.Fatalf("the counter went from %d (dump) to %d after the restore: bash started over", at, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n < at+3 {
		t.Errorf("the counter is %d 1.5 s after the restore, dumped at %d: want it to go on by ~7", n, at)
	}
	t.Logf("bash counter: %d at the dump, %d 1.5 s after the restore", at, n)
	testutil.AssertRunning(t, v.Pid)
}

// TestGoCounter: a Go program (CGO_ENABLED=0; several threads, goroutines,
// a time.Ticker, signal.Notify) continues counting from the dumped value
// after the restore and still handles SIGUSR1 through its signal channel;
// on SIGTERM it checks its heap, its goroutines, the clock and the GC
// (test/victims/gocounter).
func TestGoCounter(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildGoVictim(t, "gocounter")
	work := t.TempDir()
	status, ready := filepath.Join(work, "count"), filepath.Join(work, "ready")
	v := testutil.StartProgram(t, bin, ready, status)
	v.Ready = ready
	v.WaitReady(t)
	testutil.WaitFor(t, 5*time.Second, "the Go counter to reach 20", func() bool {
		return testutil.ReadCounter(t, status) >= 20
	})
	goUSR1(t, v, 1)
	st, _ := testutil.Status(v.Pid)
	t.Logf("Go victim: %s threads", st["Threads"])

	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	at := testutil.ReadCounter(t, status)
	testutil.CheckImages(t, dir)
	resetCounterFile(t, status)
	testutil.RestoreDetached(t, dir, v)
	expectCountingFrom(t, status, at)
	goUSR1(t, v, 2)
	v.TermAndCheck(t)
}

// goUSR1 sends SIGUSR1 to the Go victim and waits for it to log it as the
// n-th one.
func goUSR1(t *testing.T, v *testutil.Victim, n int) {
	t.Helper()
	v.Signal(t, unix.SIGUSR1)
	want := fmt.Sprintf("SIGUSR1 #%d ", n)
	testutil.WaitFor(t, 3*time.Second, "the Go victim to log "+strings.TrimSpace(want), func() bool {
		return countIn(v, want) == 1
	})
}
