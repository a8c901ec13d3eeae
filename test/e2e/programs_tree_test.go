package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
	"golang.org/x/sys/unix"
)

// bashLoop forks a sleep every 0.2 s and writes how many it ran to $0
// (renamed into place: a reader, or a dump between the truncation and the
// write of an echo >, would see it empty).
const bashLoop = `i=0; while :; do sleep 0.2; i=$((i+1)); echo $i > "$0.new"; mv "$0.new" "$0"; done`

// TestBashForkLoop: bash running a loop that forks `sleep` children (no
// pipes: stdin /dev/null, stdout and stderr a log file) is dumped with
// whatever child it has at that moment; after the restore it waits for that
// child and goes on forking, and the counter it writes continues from the
// dumped value, never from 0.
func TestBashForkLoop(t *testing.T) {
	t.Parallel()
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
	sample := func() int {
		t.Helper()
		if n = readIntFile(t, file); n < at {
			t.Fatalf("the counter went from %d (dump) to %d after the restore: bash started over", at, n)
		}
		return n
	}
	for time.Since(start) < 1500*time.Millisecond {
		sample()
		time.Sleep(20 * time.Millisecond)
	}
	// ~7 in 1.5 s on a quiet machine; each round forks and execs two
	// programs, which a loaded machine makes slow.
	testutil.WaitFor(t, 10*time.Second, "the restored bash to count on by 3", func() bool { return sample() >= at+3 })
	t.Logf("bash counter: %d at the dump, %d %v after the restore", at, n, time.Since(start).Round(time.Millisecond))
	testutil.AssertRunning(t, v.Pid)
}

// TestGoCounter: a Go program (CGO_ENABLED=0; several threads, goroutines,
// a time.Ticker, signal.Notify) continues counting from the dumped value
// after the restore and still handles SIGUSR1 through its signal channel;
// on SIGTERM it checks its heap, its goroutines, the clock and the GC
// (test/victims/gocounter).
func TestGoCounter(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
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
	reset := resetCounterFile(t, status)
	testutil.RestoreDetached(t, dir, v)
	expectCountingFrom(t, status, at, reset)
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

const pythonPool = `
import multiprocessing as mp, os, signal, sys

def square(x):
    return x * x

def main():
    method, status, ready = sys.argv[1:4]
    mp.set_start_method(method)
    # With spawn and forkserver the lock is a named POSIX semaphore (a
    # file of /dev/shm that glibc mapped under a temporary name), the
    # value lives in multiprocessing's shared heap.
    lock = mp.Lock()
    done = mp.Value("q", 0)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    fd = os.open(status, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    with mp.Pool(2) as pool:
        i = 0
        while not stop:
            r = pool.map(square, range(i, i + 8))
            if r != [x * x for x in range(i, i + 8)]:
                print("FAIL: pool.map from %d = %r" % (i, r), file=sys.stderr, flush=True)
                os._exit(1)
            with lock:
                done.value += 1
            i += 1
            os.pwrite(fd, b"%20d\n" % i, 0)
            if i == 1:
                open(ready, "w").close()
        pool.close()
        pool.join()
    if done.value != i:
        print("FAIL: shared value %d, want %d" % (done.value, i), file=sys.stderr, flush=True)
        os._exit(1)
    print("PASS after %d rounds" % i, flush=True)
    os._exit(0)

if __name__ == "__main__":
    main()
`

// TestPythonMultiprocessing: python3 multiprocessing with each start
// method: a Pool of 2 workers (with spawn and forkserver, a
// resource_tracker and a forkserver process too, talking over pipes and
// unix sockets), a Lock (a named POSIX semaphore, mapped by every process
// under the temporary name glibc gave it before linking it under its
// real one) and a Value in the shared heap. The tree goes on computing
// after the restore; on SIGTERM it joins its pool and checks that every
// round's result and increment is there.
func TestPythonMultiprocessing(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	for _, method := range []string{"fork", "spawn", "forkserver"} {
		t.Run(method, func(t *testing.T) {
			work := t.TempDir()
			script, status, ready := filepath.Join(work, "pool.py"), filepath.Join(work, "rounds"), filepath.Join(work, "ready")
			if err := os.WriteFile(script, []byte(pythonPool), 0o644); err != nil {
				t.Fatal(err)
			}
			v := testutil.StartProgram(t, program(t, "python3"), script, method, status, ready)
			v.Ready = ready
			v.WaitReady(t)
			// The pool's workers exist before the first round ends.
			tree := testutil.MustTree(t, v.Pid)
			t.Logf("tree:\n%s", testutil.FormatTree(tree))
			dir := t.TempDir()
			dumpTree(t, v, tree, dir)
			at := testutil.ReadCounter(t, status)
			testutil.CheckImages(t, dir)
			restoreTree(t, dir, v, tree)
			testutil.WaitFor(t, 10*time.Second, "the pool to compute 20 more rounds", func() bool {
				return testutil.ReadCounter(t, status) >= at+20
			})
			v.TermAndCheck(t)
		})
	}
}

// TestGoPidfds: a Go program with children started through os/exec holds
// a pidfd of each (Go >= 1.23), and one of a child it already waited for.
// After the restore the pidfds are of the restored children (SIGTERM
// through them ends the sleeps, Wait gets the zombie's status 7) and the
// gone one's is of a process that has ended (gosuper).
func TestGoPidfds(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	ready := filepath.Join(t.TempDir(), "ready")
	v := testutil.StartProgram(t, testutil.BuildGoVictim(t, "gosuper"), ready)
	v.Ready = ready
	v.WaitReady(t)
	tree := testutil.MustTree(t, v.Pid)
	dir := t.TempDir()
	dumpTree(t, v, tree, dir)
	testutil.CheckImages(t, dir)
	restoreTree(t, dir, v, tree)
	v.TermAndCheck(t)
}
