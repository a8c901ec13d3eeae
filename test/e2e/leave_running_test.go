package e2e

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestLeaveRunning: with -R the process runs on after the dump (its counter
// keeps increasing) and is not disturbed (its self-check passes); the images
// are complete: they restore after the original is gone.
func TestLeaveRunning(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v, status := counterVictim(t)
	dir := t.TempDir()

	// Sample the counter while the dump runs, to report how long it froze.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var maxGap time.Duration
	wg.Add(1)
	go func() {
		defer wg.Done()
		last, lastChange := uint64(0), time.Now()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			b, err := os.ReadFile(status)
			if err != nil {
				continue
			}
			n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
			if err != nil || n == last {
				if gap := time.Since(lastChange); gap > maxGap {
					maxGap = gap
				}
				continue
			}
			last, lastChange = n, time.Now()
		}
	}()
	before := testutil.ReadCounter(t, status)
	testutil.Dump(t, v.Pid, dir, "-R")
	after := testutil.ReadCounter(t, status)
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("counter stalled at most %v around the dump", maxGap.Round(time.Millisecond))

	testutil.AssertRunning(t, v.Pid)
	testutil.WaitFor(t, 2*time.Second, "the counter to keep increasing after dump -R", func() bool {
		return testutil.ReadCounter(t, status) > after+5
	})
	testutil.CheckImages(t, dir)
	v.TermAndCheck(t)

	// Now the images alone: restore them.
	reset := resetCounterFile(t, status)
	testutil.RestoreDetached(t, dir, v)
	// The counter ran during the dump until the freeze: the images hold
	// a value in before..after.
	expectCountingBetween(t, status, before, after, reset)
	v.TermAndCheck(t)
}

// TestLeaveRunningRegisters: dump -R of a task spinning with values only in
// registers does not change them (the dumper's remote syscalls must put
// every register back), and the images restore it later.
func TestLeaveRunningRegisters(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "fpu", fpuMode(t))
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "-R")
	time.Sleep(300 * time.Millisecond) // a changed register ends it at once
	testutil.AssertRunning(t, v.Pid)
	v.TermAndCheck(t)

	testutil.RestoreDetached(t, dir, v)
	time.Sleep(200 * time.Millisecond)
	v.TermAndCheck(t)
}

// TestLeaveRunningSignals: dump -R leaves pending and queued signals queued
// (reading them must not dequeue them) and the handlers in place.
func TestLeaveRunningSignals(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "signals", strconv.Itoa(os.Getpid()))
	v.WaitReady(t)
	sendPendingUSR2(t, v)
	testutil.Dump(t, v.Pid, t.TempDir(), "-R")
	testutil.AssertRunning(t, v.Pid)
	sendUSR1(t, v)
	v.TermAndCheck(t)
}

// TestLeaveStopped: with -s the process is left stopped (SIGSTOP), not
// traced; SIGCONT resumes it undisturbed.
func TestLeaveStopped(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v, status := counterVictim(t)
	testutil.Dump(t, v.Pid, t.TempDir(), "-s")
	testutil.WaitFor(t, time.Second, "the task to be stopped and not traced", func() bool {
		st, err := testutil.Status(v.Pid)
		return err == nil && strings.HasPrefix(st["State"], "T") && st["TracerPid"] == "0"
	})
	n := testutil.ReadCounter(t, status)
	time.Sleep(200 * time.Millisecond)
	if m := testutil.ReadCounter(t, status); m != n {
		t.Errorf("counter moved from %d to %d while the task should be stopped", n, m)
	}
	v.Signal(t, 18) // SIGCONT
	testutil.WaitFor(t, 2*time.Second, "the counter to advance after SIGCONT", func() bool {
		return testutil.ReadCounter(t, status) > n
	})
	v.TermAndCheck(t)
}
