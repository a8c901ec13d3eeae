package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestScreen: a detached screen session (the SCREEN daemon, the bash of
// its window and top running in it) is dumped, killed and restored;
// `screen -r` from a tmux pane reattaches to it, top is still updating,
// and once it is quit the shell takes what is typed and has its
// variables and history.
//
// `screen -dm` daemonizes: the front process forks the daemon and exits,
// so the daemon (whose pid names its socket) is re-parented to the test
// process, the subreaper. That daemon is the root that is dumped; the
// dump kills the tree (zombies the test reaps) and `restore -d` gives the
// same pids back, again children of the test. The session is ended by
// the daemon's pid at the end, after tmux (whose pane runs the attached
// client) is gone: the cleanups run in reverse order.
func TestScreen(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "screen")
	sdir := t.TempDir() // SCREENDIR, mode 0700 as screen wants
	if err := os.Chmod(sdir, 0o700); err != nil {
		t.Fatal(err)
	}
	// The shell's history in a file of the test's, not ~/.bash_history.
	env := append(os.Environ(), "SCREENDIR="+sdir, "PS1=win$ ", "TERM=xterm", "HISTFILE="+filepath.Join(t.TempDir(), "bash_history"))
	screen := func(args ...string) {
		t.Helper()
		cmd := exec.Command("timeout", append([]string{"10", "screen"}, args...)...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("screen %v: %v\n%s", args, err, out)
		}
	}
	var daemon, bash, top int
	t.Cleanup(func() { endTree(t, &daemon, &bash, &top) })
	// The session's pty is not the lowest free index, which a pty opened
	// by another program between the dump and the restore would take.
	spare := make([]int, 4)
	for i := range spare {
		fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		spare[i] = fd
	}
	screen("-dmS", "s", "bash", "--norc", "--noprofile", "-i")
	defer func() {
		for _, fd := range spare {
			unix.Close(fd)
		}
	}()
	testutil.WaitFor(t, 5*time.Second, "the screen socket in "+sdir, func() bool {
		ents, _ := os.ReadDir(sdir)
		for _, e := range ents {
			if pid, _, ok := strings.Cut(e.Name(), "."); ok {
				daemon, _ = strconv.Atoi(pid)
				return daemon > 0
			}
		}
		return false
	})
	if ppid := mustPPid(t, daemon); ppid != os.Getpid() {
		t.Fatalf("the screen daemon %d has parent %d, want the test process %d (subreaper)", daemon, ppid, os.Getpid())
	}
	bash = childOf(t, daemon, "bash") // its window, and so its pty, exists
	for _, fd := range spare {
		unix.Close(fd)
	}
	spare = nil
	screen("-S", "s", "-X", "stuff", "X=42; echo hist-marker\n")
	time.Sleep(200 * time.Millisecond)
	screen("-S", "s", "-X", "stuff", "top -d 0.5\n")
	top = childOf(t, bash, "top")
	time.Sleep(500 * time.Millisecond)

	dir := t.TempDir()
	testutil.Dump(t, daemon, dir)
	testutil.CheckImages(t, dir)
	reapGone(t, daemon, bash, top)

	// While another process holds the pty index the session had, the
	// restore names the holder and leaves nothing behind.
	index := ptyIndexOf(t, dir)
	hold := holdPty(t, index)
	testutil.AssertContains(t, testutil.RestoreFail(t, dir), fmt.Sprintf("/dev/pts/%d is in use", index), fmt.Sprintf("held by pid %d", os.Getpid()))
	unix.Close(hold)

	log := filepath.Join(t.TempDir(), "restore.log")
	if r := testutil.Run(t, 30*time.Second, "restore", "-D", dir, "-d", "-v4", "-o", log); r.Code != 0 {
		t.Fatalf("restore: %s\n%s", r, readFile(log))
	}
	for _, pid := range []int{daemon, bash, top} {
		if !testutil.Exists(pid) {
			t.Fatalf("pid %d is not restored", pid)
		}
	}
	if ppid := mustPPid(t, daemon); ppid != os.Getpid() {
		t.Errorf("the restored screen daemon %d has parent %d, want the test process %d", daemon, ppid, os.Getpid())
	}
	if st, err := testutil.StatField(top, 7); err != nil || st == "0" {
		t.Errorf("top has no controlling terminal after the restore (tty_nr %q)", st)
	}

	tm := startTmux(t)
	p := tm.firstPane()
	tm.waitScreen(p, "outer$", 5*time.Second)
	tm.typeLine(p, fmt.Sprintf("env SCREENDIR=%s screen -r s", sdir))
	clock := regexp.MustCompile(`top - ([0-9:]+)`)
	first := clock.FindStringSubmatch(tm.waitScreen(p, "top - ", 10*time.Second))
	testutil.WaitFor(t, 5*time.Second, "top to update its clock", func() bool {
		m := clock.FindStringSubmatch(tm.screen(p))
		return m != nil && first != nil && m[1] != first[1]
	})
	tm.keys(p, "q")
	tm.waitScreen(p, "win$", 5*time.Second)
	tm.typeLine(p, "echo x=$X; history | grep -m1 hist-marker; echo end-$((1+1))")
	sc := tm.waitScreen(p, "end-2", 5*time.Second)
	if !strings.Contains(sc, "x=42") {
		t.Errorf("the shell's variable is lost:\n%s", sc)
	}
	if !strings.Contains(sc, "X=42; echo hist-marker") {
		t.Errorf("the shell's history is lost:\n%s", sc)
	}
}

func mustPPid(t *testing.T, pid int) int {
	t.Helper()
	st, err := testutil.ReadStat(pid)
	if err != nil {
		t.Fatalf("pid %d: %v", pid, err)
	}
	return st.PPid
}

// endTree kills, by pid, the tasks of a tree the test started or restored
// that are still there and reaps them. A pid of 0 is not known yet.
func endTree(t *testing.T, pids ...*int) {
	var live []int
	for _, p := range pids {
		if *p > 0 && testutil.Exists(*p) {
			unix.Kill(*p, unix.SIGKILL)
			live = append(live, *p)
		}
	}
	reapGone(t, live...)
}

// ptyIndexOf is the index of the one pty pair of a dump.
func ptyIndexOf(t *testing.T, dir string) int {
	t.Helper()
	infos := testutil.ReadImage(t, dir, "tty-info.img", func() *tty.TtyInfoEntry { return &tty.TtyInfoEntry{} })
	index := -1
	for _, e := range infos {
		if e.GetPty() != nil {
			if index >= 0 && int(e.GetPty().GetIndex()) != index {
				t.Fatalf("more than one pty in %s: %v", dir, infos)
			}
			index = int(e.GetPty().GetIndex())
		}
	}
	if index < 0 {
		t.Fatalf("no pty in %s", dir)
	}
	return index
}

// holdPty opens /dev/ptmx until it gets pty index (a new pair takes the
// lowest free index) and returns that master; it fails if index is taken.
func holdPty(t *testing.T, index int) int {
	t.Helper()
	var extra []int
	defer func() {
		for _, fd := range extra {
			unix.Close(fd)
		}
	}()
	for {
		fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
		switch {
		case err != nil:
			unix.Close(fd)
			t.Fatal(err)
		case n == index:
			t.Cleanup(func() { unix.Close(fd) })
			return fd
		case n > index:
			unix.Close(fd)
			t.Fatalf("pty %d was taken on this host before the restore", index)
		}
		extra = append(extra, fd)
	}
}
