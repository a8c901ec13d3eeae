package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// refusal is one line `check --pid` must print: all of want, and the flag
// that makes it go away ("" if none does).
type refusal struct {
	want []string
	flag string
}

// TestPreflightRefusals: a victim holds at once every kind of resource a
// dump refuses (and an idle io_uring, which it takes): a userfaultfd, a perf_event fd, a pidfd of
// the test (outside the tree), a pipe whose other end the test holds, an
// established TCP connection, an flock'ed file, a unix datagram socket
// connected to the test's, and it is in the test's session. `stasis check
// --pid` lists every one of them in one run, one line each with its fix,
// in the dump's own words (the dump's error is the first line, and with
// -j the next one), and exits 1; with the flags that fix them, only the
// three without a flag are left. The victim is left running untouched
// (not stopped, not traced, its self-check passes: the lock still held,
// bytes still flow both ways over the connection, the datagram peer still
// gets what it sends).
func TestPreflightRefusals(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	peerPath := filepath.Join(dir, "peer.sock")
	peer, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: peerPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(w.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	pipeKey := fmt.Sprintf("pipe:[%d]", st.Ino)

	// Its stdin is the pipe, and it stays in the test's session.
	v := testutil.StartVictimWith(t, func(c *exec.Cmd) {
		c.Stdin, c.SysProcAttr = r, &syscall.SysProcAttr{}
	}, "fdkind", "io_uring", "userfaultfd", "perf_event", "pidfd", "flock", "tcp", "dgram="+peerPath)
	r.Close()
	v.WaitReady(t)
	pid, self := v.Pid, os.Getpid()
	of := func(fd int) string { return fmt.Sprintf("fd %d of pid %d ", fd, pid) }
	all := []refusal{
		{[]string{fmt.Sprintf("pid %d (fdkind) belongs to session", pid), "-j/--shell-job"}, "-j"},
		{[]string{of(46) + "is userfaultfd: not supported"}, ""},
		{[]string{of(50) + "is perf_event: not supported"}, ""},
		{[]string{of(54) + fmt.Sprintf("is a pidfd of pid %d", self), "dump a tree that holds that process too"}, ""},
		{[]string{fmt.Sprintf("pid %d holds an flock write lock on %s (fd 58)", pid, filepath.Join(filepath.Dir(v.Ready), "flock-58")), "-l/--file-locks"}, "-l"},
		{[]string{of(62) + "is TCP connection 127.0.0.1:", "(ESTABLISHED)", "dump with --tcp-established"}, "--tcp-established"},
		{[]string{of(63) + "is TCP connection 127.0.0.1:", "(ESTABLISHED)", "dump with --tcp-established"}, "--tcp-established"},
		{[]string{fmt.Sprintf("%s (fd 0 of pid %d) is also open as fd %d of pid %d", pipeKey, pid, w.Fd(), self), "--external " + pipeKey}, "--external"},
		{[]string{of(66) + "(socket:[", "a unix datagram socket) is connected to", peerPath, "-x/--ext-unix-sk"}, "-x"},
	}

	lines := checkPid(t, 1, pid)
	if want := fmt.Sprintf("dump of pid %d (1 process, 1 thread) would fail, %d problems:", pid, len(all)); lines[0] != want {
		t.Errorf("first line %q, want %q", lines[0], want)
	}
	matchRefusals(t, lines[1:], all)
	assertRunning(t, pid)

	// The same words as the dump's own errors: the first refusal, then,
	// with -j, the next one.
	for i, extra := range [][]string{nil, {"-j"}} {
		msg := dumpRefusal(t, pid, extra...)
		if got := strings.TrimSpace(lines[1+i]); msg != got {
			t.Errorf("dump %v says\n  %s\ncheck --pid says\n  %s", extra, msg, got)
		}
		assertRunning(t, pid)
	}

	var left []refusal
	for _, x := range all {
		if x.flag == "" {
			left = append(left, x)
		}
	}
	lines = checkPid(t, 1, pid, "-j", "-l", "-x", "--tcp-established", "--external", pipeKey)
	if want := fmt.Sprintf("dump of pid %d (1 process, 1 thread) would fail, %d problems:", pid, len(left)); lines[0] != want {
		t.Errorf("first line %q, want %q", lines[0], want)
	}
	matchRefusals(t, lines[1:], left)
	assertRunning(t, pid)
	requireNoLock(t, pid, "by check --pid --tcp-established")

	v.TermAndCheck(t)
	// Its check sent a datagram to the test's socket.
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 8)
	if n, _, err := peer.ReadFrom(buf); err != nil || string(buf[:n]) != "x" {
		t.Errorf("the datagram peer got %q, %v; want \"x\"", buf[:n], err)
	}
}

// TestPreflightClean: `check --pid` of trees a dump takes as they are
// exits 0 with one line that counts their processes and threads, and
// leaves them running untouched; the victims' self-checks pass. A pid
// that does not exist is an error naming it.
func TestPreflightClean(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	t.Run("one-process", func(t *testing.T) {
		v := testutil.StartVictim(t, "fdkind", "eventfd", "unix")
		v.WaitReady(t)
		lines := checkPid(t, 0, v.Pid)
		if want := fmt.Sprintf("dump of pid %d (1 process, 1 thread) looks possible", v.Pid); len(lines) != 1 || lines[0] != want {
			t.Errorf("stdout %q, want %q", lines, want)
		}
		assertRunning(t, v.Pid)
		v.TermAndCheck(t)
	})

	t.Run("threads", func(t *testing.T) {
		v := testutil.StartVictim(t, "threads", "16")
		v.WaitReady(t)
		lines := checkPid(t, 0, v.Pid)
		if want := fmt.Sprintf("dump of pid %d (1 process, 17 threads) looks possible", v.Pid); len(lines) != 1 || lines[0] != want {
			t.Errorf("stdout %q, want %q", lines, want)
		}
		assertRunning(t, v.Pid)
		v.TermAndCheck(t)
	})

	t.Run("tree", func(t *testing.T) {
		v, tree := startTreeVictim(t, "tree")
		procs, threads := len(tree), 0
		for _, x := range tree {
			if !x.Zombie() {
				threads += x.Threads
			}
		}
		lines := checkPid(t, 0, v.Pid)
		if want := fmt.Sprintf("dump of pid %d (%d processes, %d threads) looks possible", v.Pid, procs, threads); len(lines) != 1 || lines[0] != want {
			t.Errorf("stdout %q, want %q", lines, want)
		}
		assertRunning(t, v.Pid)
		if got := testutil.WaitTree(t, v.Pid, tree, false, 5*time.Second); len(got) != len(tree) {
			t.Errorf("the tree has %d tasks after the check, had %d", len(got), len(tree))
		}
		v.TermAndCheck(t)
	})

	t.Run("no-such-pid", func(t *testing.T) {
		pid := testutil.FreePID(t)
		r := testutil.Run(t, 25*time.Second, "check", "--pid", strconv.Itoa(pid))
		if r.Code != 1 || !strings.HasPrefix(r.Stderr, "Error: ") || r.Stdout != "" {
			t.Fatalf("want exit 1 with an error and nothing on stdout\n%s", r)
		}
		assertNamesPID(t, r.Stderr, pid)
		testutil.AssertContains(t, r.Stderr, "no such process")
	})

	t.Run("dump-flag-without-pid", func(t *testing.T) {
		r := testutil.Run(t, 25*time.Second, "check", "--tcp-established")
		if r.Code != 1 || !strings.Contains(r.Stderr, "--pid") {
			t.Fatalf("want exit 1 with an error that asks for --pid\n%s", r)
		}
	})
}

// checkPid runs `stasis check --pid PID EXTRA...`, requires exit code
// want and returns its stdout lines.
func checkPid(t *testing.T, want, pid int, extra ...string) []string {
	t.Helper()
	r := testutil.Run(t, 25*time.Second, append([]string{"check", "--pid", strconv.Itoa(pid), "-v4", "-o", filepath.Join(t.TempDir(), "check.log")}, extra...)...)
	if r.Code != want || r.Stderr != "" {
		t.Fatalf("want exit %d and nothing on stderr\n%s", want, r)
	}
	t.Logf("%s", r)
	return strings.Split(strings.TrimSuffix(r.Stdout, "\n"), "\n")
}

// matchRefusals requires one line per refusal, each matched by exactly
// one of want, in any order.
func matchRefusals(t *testing.T, lines []string, want []refusal) {
	t.Helper()
	if len(lines) != len(want) {
		t.Errorf("%d refusals listed, want %d", len(lines), len(want))
	}
	used := make([]bool, len(lines))
	for _, x := range want {
		found := -1
		for i, l := range lines {
			ok := !used[i] && strings.HasPrefix(l, "  ")
			for _, s := range x.want {
				ok = ok && strings.Contains(l, s)
			}
			if ok {
				found = i
				break
			}
		}
		if found < 0 {
			t.Errorf("no line lists %q", x.want)
			continue
		}
		used[found] = true
	}
	for i, l := range lines {
		if !used[i] {
			t.Errorf("unexpected refusal: %s", l)
		}
	}
}

// TestPreflightGhosts: unlinked files. Without --link-remap, a file whose
// other name is in another directory is refused, and a 2 MiB one over
// --ghost-limit 1M too; with --link-remap only the one over the limit is
// left (it has no name to link from), and without the limit none. The
// preflight makes no link_remap.N link, as the dump would (orig.txt, the
// O_TMPFILE file): the victim's check that orig.txt still has one link
// and the glob below would see it.
func TestPreflightGhosts(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	work := t.TempDir()
	v := testutil.StartVictim(t, "ghost", work, "linked", "small", "big")
	v.WaitReady(t)
	other := filepath.Join(t.TempDir(), "moved.txt")
	if err := os.Rename(filepath.Join(work, "other.txt"), other); err != nil {
		t.Fatal(err)
	}
	linked := refusal{[]string{filepath.Join(work, "orig.txt") + " was unlinked but the file has 1 other link(s): use --link-remap"}, "--link-remap"}
	big := refusal{[]string{"unlinked file " + filepath.Join(work, "big.bin") + " holds 2097152 bytes", "limit of 1048576 bytes: raise --ghost-limit"}, "--ghost-limit"}

	lines := checkPid(t, 1, v.Pid, "--ghost-limit", "1M")
	matchRefusals(t, lines[1:], []refusal{linked, big})
	lines = checkPid(t, 1, v.Pid, "--ghost-limit", "1M", "--link-remap")
	matchRefusals(t, lines[1:], []refusal{big})
	checkPid(t, 0, v.Pid, "--link-remap")
	assertRunning(t, v.Pid)
	for _, d := range []string{work, filepath.Dir(other)} {
		if links, _ := filepath.Glob(filepath.Join(d, "link_remap.*")); len(links) != 0 {
			t.Errorf("check --pid --link-remap made links %v", links)
		}
	}
	if err := os.Rename(other, filepath.Join(work, "other.txt")); err != nil {
		t.Fatal(err)
	}
	v.TermAndCheck(t)
}

// TestPreflightUnixInFlight: a socket whose queue carries an inotify fd
// (SCM_RIGHTS) is refused; its peer, in the tree, is not reported as
// connected to a socket outside it: one refusal, the dump's.
func TestPreflightUnixInFlight(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "unixsk", "scm-inotify", "-")
	v.WaitReady(t)
	lines := checkPid(t, 1, v.Pid)
	matchRefusals(t, lines[1:], []refusal{{want: []string{fmt.Sprintf("fd 11 of pid %d is a unix socket whose queue carries inotify in flight (SCM_RIGHTS)", v.Pid)}}})
	msg := dumpRefusal(t, v.Pid)
	if len(lines) > 1 && strings.TrimSpace(lines[1]) != msg {
		t.Errorf("dump says\n  %s\ncheck --pid says\n  %s", msg, strings.TrimSpace(lines[1]))
	}
	assertRunning(t, v.Pid)
	v.TermAndCheck(t)
}

// dumpRefusal is the refusal a failed dump of pid reports, without what
// the dump adds about its rollback: "(the tree was resumed as it was)"
// and the log it kept.
func dumpRefusal(t *testing.T, pid int, extra ...string) string {
	t.Helper()
	msg := strings.TrimPrefix(strings.TrimSpace(testutil.DumpFail(t, pid, t.TempDir(), extra...)), "Error: ")
	if i := strings.Index(msg, " (the tree was resumed as it was)"); i >= 0 {
		msg = msg[:i]
	}
	return msg
}
