package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// tmuxServer is a tmux server of the test's own (its own socket), whose
// panes the tests type into and look at as a person would.
type tmuxServer struct {
	t     *testing.T
	sock  string
	shell string // the command of a window: an interactive bash
}

func startTmux(t *testing.T) *tmuxServer {
	t.Helper()
	testutil.RequireTool(t, "tmux")
	dir := t.TempDir()
	// The shells keep their history in a file of the test (bash loads
	// ~/.bash_history otherwise, and writes it when it exits).
	s := &tmuxServer{t: t, sock: filepath.Join(dir, "tmux.sock"),
		shell: fmt.Sprintf("env PS1='outer$ ' HISTFILE=%s bash --norc --noprofile -i", filepath.Join(dir, "bash_history"))}
	s.run("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "120", "-y", "40", s.shell)
	t.Cleanup(func() { exec.Command("tmux", "-S", s.sock, "kill-server").Run() })
	return s
}

func (s *tmuxServer) run(args ...string) string {
	s.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", s.sock}, args...)...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// newPane opens a window running an interactive bash and returns its pane.
// The target is "t:", the session: a bare "t" is first looked up as a
// window name, and tmux matches a prefix, so while window 0 runs a command
// starting with t ("tmux: server", the pane's child before its exec, under
// load) the new window was asked for at index 0: "index 0 in use".
func (s *tmuxServer) newPane() string {
	return s.run("new-window", "-t", "t:", "-P", "-F", "#{pane_id}", s.shell)
}

func (s *tmuxServer) firstPane() string { return s.run("list-panes", "-t", "t:0", "-F", "#{pane_id}") }

// typeLine types text and Enter.
func (s *tmuxServer) typeLine(pane, text string) {
	s.run("send-keys", "-t", pane, "-l", text)
	s.run("send-keys", "-t", pane, "Enter")
}

func (s *tmuxServer) keys(pane string, keys ...string) {
	s.run(append([]string{"send-keys", "-t", pane}, keys...)...)
}

func (s *tmuxServer) screen(pane string) string { return s.run("capture-pane", "-p", "-t", pane) }

// waitScreen waits until the pane shows want.
func (s *tmuxServer) waitScreen(pane, want string, timeout time.Duration) string {
	s.t.Helper()
	timeout = max(timeout, testutil.MinWait) // a loaded machine draws late
	deadline := time.Now().Add(timeout)
	for {
		sc := s.screen(pane)
		if strings.Contains(sc, want) {
			return sc
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("pane %s does not show %q after %v; it shows:\n%s", pane, want, timeout, sc)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *tmuxServer) panePid(pane string) int {
	pid, err := strconv.Atoi(s.run("display", "-p", "-t", pane, "#{pane_pid}"))
	if err != nil {
		s.t.Fatal(err)
	}
	return pid
}

// childOf waits for the single child of pid running comm.
func childOf(t *testing.T, pid int, comm string) int {
	t.Helper()
	var found int
	testutil.WaitFor(t, 5*time.Second, fmt.Sprintf("a %s child of pid %d", comm, pid), func() bool {
		for _, c := range testutil.Children(pid) {
			if testutil.Comm(c) == comm {
				found = c
				return true
			}
		}
		return false
	})
	return found
}

// TestShellJob: an interactive bash started in one tmux pane, with a job
// stopped by Ctrl-Z and vim in the foreground editing an unsaved file, is
// dumped with -j and restored with -j in another pane: vim shows the
// unsaved text and saves it, the job is still stopped and `fg` resumes it,
// the shell keeps its variables and history.
func TestShellJob(t *testing.T) {
	testutil.RequireRoot(t)
	vim := testutil.RequireTool(t, "vim.basic")
	work := t.TempDir()
	file := filepath.Join(work, "notes.txt")
	tm := startTmux(t)
	p1 := tm.firstPane()
	outer := tm.panePid(p1)
	tm.typeLine(p1, "bash --norc --noprofile -i")
	bash := childOf(t, outer, "bash")
	tm.typeLine(p1, "PS1='inner$ '; MARK=kept-$((6*7)); echo history-marker-1")
	tm.waitScreen(p1, "history-marker-1", 5*time.Second)
	tm.typeLine(p1, "sleep 1000")
	sleep := childOf(t, bash, "sleep")
	tm.keys(p1, "C-z")
	tm.waitScreen(p1, "Stopped", 5*time.Second)
	tm.typeLine(p1, vim+" -u NONE -N -n "+file)
	vimPid := childOf(t, bash, "vim.basic")
	time.Sleep(300 * time.Millisecond)
	tm.keys(p1, "i")
	tm.run("send-keys", "-t", p1, "-l", "unsaved text 12345")
	tm.keys(p1, "Escape")
	tm.waitScreen(p1, "unsaved text 12345", 5*time.Second)
	testutil.WaitFor(t, 5*time.Second, "vim to leave insert mode", func() bool { return !strings.Contains(tm.screen(p1), "-- INSERT --") })

	dir := t.TempDir()
	if out := testutil.DumpFail(t, bash, dir); true {
		testutil.AssertContains(t, out, "-j/--shell-job")
	}
	testutil.Dump(t, bash, dir, "-j")
	testutil.CheckImages(t, dir)
	tm.waitScreen(p1, "outer$", 5*time.Second) // the outer shell is back
	reapGone(t, bash, sleep, vimPid)

	// Without -j the restore says what is missing and leaves nothing.
	testutil.AssertContains(t, testutil.RestoreFail(t, dir), "-j/--shell-job")

	p2 := tm.newPane()
	tm.waitScreen(p2, "outer$", 5*time.Second)
	log := filepath.Join(work, "restore.log")
	tm.typeLine(p2, fmt.Sprintf("%s restore -j -D %s -v4 -o %s; echo restore-exit=$?", testutil.StasisBin(t), dir, log))
	testutil.WaitFor(t, 10*time.Second, "the restored bash", func() bool { return testutil.Exists(bash) })
	time.Sleep(300 * time.Millisecond)
	tm.keys(p2, "C-l") // a person redraws the screen of the editor
	if sc := tm.waitScreen(p2, "unsaved text 12345", 5*time.Second); strings.Contains(sc, "restore-exit") {
		t.Fatalf("stasis restore ended:\n%s\nlog:\n%s", sc, readFile(log))
	}
	if st, _ := testutil.ReadStat(sleep); st.State != 'T' {
		t.Errorf("the stopped job runs after the restore: state %q", st.State)
	}
	tm.typeLine(p2, ":wq")
	testutil.WaitFor(t, 5*time.Second, "vim to save "+file, func() bool {
		b, _ := os.ReadFile(file)
		return string(b) == "unsaved text 12345\n"
	})
	tm.waitScreen(p2, "inner$", 5*time.Second)
	// The history line of MARK shows only if the history was kept: it was
	// typed in the other pane.
	tm.typeLine(p2, "echo mark=$MARK; history | grep -m1 MARK; jobs; echo end-$((1+1))")
	sc := tm.waitScreen(p2, "end-2", 5*time.Second)
	if !strings.Contains(sc, "mark=kept-42") {
		t.Errorf("the variables of the shell are lost:\n%s", sc)
	}
	if !strings.Contains(sc, "MARK=kept-$((6*7))") {
		t.Errorf("the history of the shell is lost:\n%s", sc)
	}
	if !strings.Contains(sc, "Stopped") || !strings.Contains(sc, "sleep 1000") {
		t.Errorf("jobs does not list the stopped sleep:\n%s", sc)
	}
	tm.typeLine(p2, "fg")
	testutil.WaitFor(t, 5*time.Second, "fg to resume sleep", func() bool {
		st, err := testutil.ReadStat(sleep)
		return err == nil && st.State == 'S'
	})
	tm.keys(p2, "C-c")
	testutil.WaitFor(t, 5*time.Second, "Ctrl-C to end sleep", func() bool { return !testutil.Exists(sleep) })
	tm.typeLine(p2, "exit 7")
	tm.waitScreen(p2, "restore-exit=7", 5*time.Second) // stasis restore exits as the shell did
}

// TestShellJobWindowShell: the shell of a terminal window itself - the
// leader of the terminal's session - with `seq | less` in the foreground,
// dumped with -j and restored with -j in another window. It cannot lead a
// session on the terminal of stasis restore (that session is the other
// window's shell's); it comes back as a job there, leading its own group,
// with less's group in the foreground: less pages on, q gives the prompt
// back to the restored shell, which kept its variables and its fd on
// /dev/tty (still /dev/tty, now the new terminal), and its exit status is
// the one stasis restore exits with.
func TestShellJobWindowShell(t *testing.T) {
	testutil.RequireRoot(t)
	tm := startTmux(t)
	p1 := tm.firstPane()
	p2 := tm.newPane() // the server lives on once p1's shell is dumped
	shell := tm.panePid(p1)
	tm.typeLine(p1, "MARK=kept-$((6*7)); exec 7<>/dev/tty; seq 100000 | less")
	tm.waitScreen(p1, "\n39\n", 5*time.Second)
	less := childOf(t, shell, "less")
	tm.keys(p1, "Space")
	tm.waitScreen(p1, "78", 5*time.Second)
	tree := testutil.MustTree(t, shell)

	dir := t.TempDir()
	testutil.AssertContains(t, testutil.DumpFail(t, shell, dir), "-j/--shell-job")
	testutil.Dump(t, shell, dir, "-j")
	testutil.CheckImages(t, dir)
	reapGone(t, testutil.Pids(tree)...)

	tm.waitScreen(p2, "outer$", 5*time.Second)
	log := filepath.Join(t.TempDir(), "restore.log")
	tm.typeLine(p2, fmt.Sprintf("%s restore -j -D %s -v4 -o %s; echo restore-exit=$?", testutil.StasisBin(t), dir, log))
	testutil.WaitFor(t, 10*time.Second, "the restored less", func() bool { return testutil.Exists(less) })
	// A key typed before the restore hands the terminal over may reach
	// the terminal while its termios changes: wait until less's group is
	// the terminal's foreground (stat's pgrp and tpgid, fields 5 and 8).
	testutil.WaitFor(t, 10*time.Second, "the restored less in the foreground", func() bool {
		pgrp, err1 := testutil.StatField(less, 5)
		tpgid, err2 := testutil.StatField(less, 8)
		return err1 == nil && err2 == nil && pgrp == tpgid
	})
	tm.keys(p2, "Space")
	if sc := tm.waitScreen(p2, "117", 5*time.Second); strings.Contains(sc, "restore-exit") {
		t.Fatalf("stasis restore ended:\n%s\nlog:\n%s", sc, readFile(log))
	}
	if pgid, err := unix.Getpgid(shell); err != nil || pgid != shell {
		t.Errorf("the restored shell's group is %d (%v), want its own", pgid, err)
	}
	// fd 7 is /dev/tty again: the terminal of the session it is in now.
	if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/7", shell)); err != nil || l != "/dev/tty" {
		t.Errorf("the shell's fd 7 is %q (%v), want /dev/tty", l, err)
	}
	tm.keys(p2, "q")
	tm.typeLine(p2, "echo mark=$MARK; echo via-$((2+3))-dev-tty >&7; echo end-$((1+1))")
	sc := tm.waitScreen(p2, "end-2", 5*time.Second)
	if !strings.Contains(sc, "mark=kept-42") {
		t.Errorf("the restored shell lost its variable:\n%s", sc)
	}
	if !strings.Contains(sc, "via-5-dev-tty") {
		t.Errorf("a write to /dev/tty does not show on the terminal:\n%s", sc)
	}
	tm.typeLine(p2, "exit 3")
	tm.waitScreen(p2, "restore-exit=3", 5*time.Second)
}

// reapGone waits until the killed tasks are gone, reaping those that
// were orphaned to the test process (the subreaper).
func reapGone(t *testing.T, pids ...int) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, fmt.Sprintf("pids %v to be gone", pids), func() bool {
		for _, pid := range pids {
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			if testutil.Exists(pid) {
				return false
			}
		}
		return true
	})
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
