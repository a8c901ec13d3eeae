package e2e

import (
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

// Dump and restore by a user without root: uid 65534 (nobody), given
// capabilities through setpriv's ambient set, as a user would with
// `setcap` on the binary.

const nobody = 65534

// userEnv is a directory owned by nobody holding copies of stasis and the
// victims (the test's build dir is root's, 0700), the victims' logs and
// status files, and the images.
type userEnv struct {
	dir    string
	stasis string
}

func newUserEnv(t *testing.T) *userEnv {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skipf("setpriv (util-linux) not found: %v", err)
	}
	dir, err := os.MkdirTemp("", "stasis-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	e := &userEnv{dir: dir}
	e.stasis = copyExe(t, testutil.StasisBin(t), dir)
	return e
}

// copyExe copies an executable into dir, runnable by nobody.
func copyExe(t *testing.T, src, dir string) string {
	t.Helper()
	dst := filepath.Join(dir, filepath.Base(src))
	copyExecutable(t, src, dst, 0o755)
	return dst
}

// setpriv is the command line that runs argv as nobody with caps (setpriv
// names, e.g. "checkpoint_restore") as effective and ambient capabilities.
func setpriv(caps []string, argv ...string) *exec.Cmd {
	args := []string{"--reuid", strconv.Itoa(nobody), "--regid", strconv.Itoa(nobody), "--init-groups"}
	if len(caps) > 0 {
		c := "+" + strings.Join(caps, ",+")
		args = append(args, "--inh-caps", c, "--ambient-caps", c)
	}
	return exec.Command("setpriv", append(args, argv...)...)
}

// run runs stasis as nobody with caps.
func (e *userEnv) run(t *testing.T, caps []string, args ...string) testutil.Result {
	t.Helper()
	cmd := setpriv(caps, append([]string{e.stasis}, args...)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := testutil.Result{Args: args, Stdout: out.String(), Stderr: errb.String(), Took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.Code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run stasis as uid %d: %v", nobody, err)
	}
	return r
}

// userVictim is a victim running as nobody, in its own session, its
// output in a log file nobody owns (a restore by nobody reopens it).
type userVictim struct {
	pid    int
	log    string
	exited chan int // exit code (128+signal) of the original
}

// startVictim starts test/victims/NAME.c as nobody and waits for it to be
// ready.
func (e *userEnv) startVictim(t *testing.T, name string, args ...string) *userVictim {
	t.Helper()
	work, err := os.MkdirTemp(e.dir, name+"-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := copyExe(t, testutil.BuildVictim(t, name), work)
	if err := os.Chown(work, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(work, "ready")
	v := &userVictim{log: filepath.Join(work, "log"), exited: make(chan int, 1)}
	f, err := os.OpenFile(v.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Chown(nobody, nobody); err != nil {
		t.Fatal(err)
	}
	argv := []string{bin, ready}
	for _, a := range args {
		argv = append(argv, strings.ReplaceAll(a, "WORK", work))
	}
	cmd := setpriv(nil, argv...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	v.pid = cmd.Process.Pid
	go func() {
		cmd.Wait()
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			v.exited <- 128 + int(ws.Signal())
		} else {
			v.exited <- ws.ExitStatus()
		}
	}()
	t.Cleanup(func() { unix.Kill(v.pid, unix.SIGKILL) })
	testutil.WaitFor(t, 20*time.Second, name+" ready", func() bool {
		_, err := os.Stat(ready)
		return err == nil
	})
	t.Logf("started %s as uid %d, pid %d", name, nobody, v.pid)
	return v
}

// assertUntouched fails unless the victim runs on, not traced and not
// stopped, as uid nobody.
func (v *userVictim) assertUntouched(t *testing.T) {
	t.Helper()
	testutil.AssertRunning(t, v.pid)
	st, err := testutil.Status(v.pid)
	if err != nil {
		t.Fatal(err)
	}
	if st["TracerPid"] != "0" || strings.HasPrefix(st["State"], "T") || !strings.HasPrefix(st["Uid"], strconv.Itoa(nobody)) {
		t.Errorf("pid %d after the refused dump: TracerPid %s, State %s, Uid %s", v.pid, st["TracerPid"], st["State"], st["Uid"])
	}
}

// waitExit waits for the current incarnation (the original through its
// exit channel, a restored one, our child as subreaper, by wait4).
func waitExit(t *testing.T, pid int, ch <-chan int) int {
	t.Helper()
	if ch != nil {
		select {
		case c := <-ch:
			return c
		case <-time.After(testutil.MinWait):
			t.Fatalf("pid %d did not exit", pid)
		}
	}
	deadline := time.Now().Add(testutil.MinWait)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if err == nil && got == pid {
			if ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("pid %d did not exit", pid)
	return -1
}

// termAndCheck sends SIGTERM: the victim checks itself and must exit 0.
func (v *userVictim) termAndCheck(t *testing.T, ch <-chan int) {
	t.Helper()
	if err := unix.Kill(v.pid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, v.pid, ch); code != 0 {
		b, _ := os.ReadFile(v.log)
		t.Fatalf("pid %d: self-check exited %d, want 0\n%s", v.pid, code, b)
	}
}

var crCaps = []string{"checkpoint_restore", "sys_ptrace"}

// TestUnprivileged: nobody without capabilities, and with them but
// without --unprivileged, is refused before anything is touched, with a
// message that says what is missing; with CAP_CHECKPOINT_RESTORE,
// CAP_SYS_PTRACE and --unprivileged it dumps its own counter and restores
// it with the same pid, as nobody, with no capability (not into a new pid
// namespace: that needs CAP_SYS_ADMIN); the counter checks its memory and
// status file.
func TestUnprivileged(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	e := newUserEnv(t)
	v := e.startVictim(t, "counter", "WORK/status")
	pid := strconv.Itoa(v.pid)
	imgs := filepath.Join(e.dir, "imgs")

	r := e.run(t, nil, "dump", "--unprivileged", "-t", pid, "-D", imgs)
	t.Logf("no capability: %s", r)
	if r.Code == 0 {
		t.Fatalf("dump by uid %d without capabilities succeeded", nobody)
	}
	testutil.AssertContains(t, r.Stderr, "dump needs root, or CAP_CHECKPOINT_RESTORE and CAP_SYS_PTRACE", "uid 65534", "setcap", "insufficient privilege")
	v.assertUntouched(t)
	if _, err := os.Stat(imgs); err == nil {
		t.Errorf("the refused dump created %s", imgs)
	}

	r = e.run(t, crCaps, "dump", "-t", pid, "-D", imgs)
	t.Logf("no --unprivileged: %s", r)
	if r.Code == 0 {
		t.Fatalf("dump without CAP_SYS_ADMIN and without --unprivileged succeeded")
	}
	testutil.AssertContains(t, r.Stderr, "needs --unprivileged")
	v.assertUntouched(t)

	r = e.run(t, crCaps, "dump", "--unprivileged", "-t", pid, "-D", imgs, "-v4", "-o", "dump.log")
	if r.Code != 0 {
		b, _ := os.ReadFile(filepath.Join(imgs, "dump.log"))
		t.Fatalf("unprivileged dump failed\n%s\n%s", r, b)
	}
	if code := waitExit(t, v.pid, v.exited); code != 128+int(unix.SIGKILL) {
		t.Fatalf("dumped pid %d ended with %d, want SIGKILL", v.pid, code)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(imgs, "pages-1.img"), &st); err != nil || st.Uid != nobody {
		t.Errorf("pages-1.img: owner %d, %v; want uid %d", st.Uid, err, nobody)
	}

	// A pid namespace needs CAP_SYS_ADMIN: refused before anything is made.
	r = e.run(t, crCaps, "restore", "--unprivileged", "--pidns", "-d", "-D", imgs)
	if r.Code == 0 {
		t.Fatalf("unprivileged restore --pidns succeeded\n%s", r)
	}
	testutil.AssertContains(t, r.Stderr, "--pidns", "CLONE_NEWPID", "CAP_SYS_ADMIN")
	testutil.AssertNoTask(t, v.pid)

	pidfile := filepath.Join(e.dir, "restored.pid")
	r = e.run(t, crCaps, "restore", "--unprivileged", "-d", "-D", imgs, "--pidfile", pidfile, "-v4", "-o", "restore.log")
	if r.Code != 0 {
		b, _ := os.ReadFile(filepath.Join(imgs, "restore.log"))
		t.Fatalf("unprivileged restore failed\n%s\n%s", r, b)
	}
	if b, _ := os.ReadFile(pidfile); strings.TrimSpace(string(b)) != pid {
		t.Fatalf("restored pid %q, want %s", b, pid)
	}
	s, err := testutil.Status(v.pid)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s["Uid"], strconv.Itoa(nobody)) || s["CapEff"] != "0000000000000000" || s["CapAmb"] != "0000000000000000" {
		t.Errorf("restored pid %d: Uid %q CapEff %q CapAmb %q, want uid %d and no capability (stasis had some)", v.pid, s["Uid"], s["CapEff"], s["CapAmb"], nobody)
	}
	v.termAndCheck(t, nil)
}

// TestUnprivilegedRefused: with --unprivileged, a process of another user
// needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, and a process under seccomp needs CAP_SYS_ADMIN
// (PTRACE_O_SUSPEND_SECCOMP): both dumps fail at the seize naming what is
// missing, and the victims run on untouched. A dump (by root) of a task
// under seccomp is refused by an unprivileged restore before anything is
// created; root then restores it.
func TestUnprivilegedRefused(t *testing.T) {
	testutil.RequireRoot(t)
	e := newUserEnv(t)

	t.Run("other-user", func(t *testing.T) {
		v := testutil.StartVictim(t, "counter", filepath.Join(t.TempDir(), "status"))
		v.WaitReady(t)
		r := e.run(t, []string{"checkpoint_restore"}, "dump", "--unprivileged", "-t", strconv.Itoa(v.Pid), "-D", filepath.Join(e.dir, "imgs-other"))
		t.Logf("%s", r)
		if r.Code == 0 {
			t.Fatal("dump of root's process by uid 65534 without CAP_SYS_PTRACE succeeded")
		}
		testutil.AssertContains(t, r.Stderr, "CAP_CHECKPOINT_RESTORE, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH over pid "+strconv.Itoa(v.Pid)+", owned by uid 0", "setcap cap_sys_ptrace,cap_dac_read_search+eip", "ptrace seize", "operation not permitted", "insufficient privilege")
		testutil.AssertRunning(t, v.Pid)
		v.TermAndCheck(t)
	})

	t.Run("seccomp", func(t *testing.T) {
		v := e.startVictim(t, "strict")
		r := e.run(t, crCaps, "dump", "--unprivileged", "-t", strconv.Itoa(v.pid), "-D", filepath.Join(e.dir, "imgs-strict"))
		t.Logf("%s", r)
		if r.Code == 0 {
			t.Fatal("dump of a process in seccomp strict mode without CAP_SYS_ADMIN succeeded")
		}
		testutil.AssertContains(t, r.Stderr, "under seccomp", "PTRACE_O_SUSPEND_SECCOMP", "CAP_SYS_ADMIN")
		v.assertUntouched(t)
		v.termAndCheck(t, v.exited)
	})

	t.Run("seccomp-restore", func(t *testing.T) {
		v := e.startVictim(t, "strict")
		imgs := filepath.Join(e.dir, "imgs-strict-root")
		testutil.Dump(t, v.pid, imgs)
		if code := waitExit(t, v.pid, v.exited); code != 128+int(unix.SIGKILL) {
			t.Fatalf("dumped pid %d ended with %d, want SIGKILL", v.pid, code)
		}
		// The images are root's (0600 in a 0700 dir): hand them over.
		filepath.Walk(imgs, func(p string, _ os.FileInfo, _ error) error { return os.Chown(p, nobody, nobody) })
		before := testutil.Children(os.Getpid())
		r := e.run(t, crCaps, "restore", "--unprivileged", "-d", "-D", imgs)
		t.Logf("%s", r)
		if r.Code == 0 {
			t.Fatal("unprivileged restore of a task under seccomp succeeded")
		}
		testutil.AssertContains(t, r.Stderr, "restore pid "+strconv.Itoa(v.pid), "under seccomp (mode 1)", "CAP_SYS_ADMIN", "insufficient privilege")
		testutil.AssertNoTask(t, v.pid)
		// Only the new children the restore could have made: the other
		// parallel tests' victims come and go meanwhile.
		testutil.AssertNoNewChildren(t, before, imgs)
		rr := testutil.Run(t, 25*time.Second, "restore", "-d", "-D", imgs)
		if rr.Code != 0 {
			t.Fatalf("restore as root failed\n%s", rr)
		}
		v.termAndCheck(t, nil)
	})
}
