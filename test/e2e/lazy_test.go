package e2e

import (
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// Lazy pages (post-copy): dump --lazy-pages, lazy-pages, restore
// --lazy-pages. The source stays frozen under its pid while its pages are
// served, so the copy is restored into a pid (and mount) namespace of its
// own (--pidns).

// lazyMiB is the victim's memory: small in CI, 512 in bench/lazy.
func lazyMiB() string {
	if s := os.Getenv("STASIS_LAZY_MIB"); s != "" {
		return s
	}
	return "64"
}

// bgProc is a stasis (or criu) process a test runs in the background.
type bgProc struct {
	cmd    *exec.Cmd
	log    string
	stderr bytes.Buffer
	done   chan int
}

// startBg starts bin with args; with ready, it waits for the byte the
// process writes on fd 3 (--status-fd 3) once it listens.
func startBg(t *testing.T, bin, log string, ready bool, args ...string) *bgProc {
	t.Helper()
	p := &bgProc{log: log, done: make(chan int, 1)}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stderr = &p.stderr
	var r *os.File
	if ready {
		var w *os.File
		var err error
		if r, w, err = os.Pipe(); err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		p.cmd.ExtraFiles = []*os.File{w}
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.done <- p.cmd.ProcessState.ExitCode()
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	if ready {
		defer r.Close()
		_ = r.SetReadDeadline(time.Now().Add(20 * time.Second))
		if n, _ := r.Read(make([]byte, 1)); n != 1 {
			t.Fatalf("%s %s did not start listening\n%s\n%s", bin, args[0], p.stderr.String(), tail(p.logText(), 2000))
		}
	}
	return p
}

func (p *bgProc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// wait returns the process's exit code.
func (p *bgProc) wait(t *testing.T, what string, timeout time.Duration) int {
	t.Helper()
	select {
	case code := <-p.done:
		p.done <- code
		return code
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v\n%s", what, timeout, tail(p.logText(), 2000))
	}
	return -1
}

// startLazyDaemon starts `stasis ARGS` (lazy-pages ... --status-fd 3)
// at nice 19, every thread of it, and waits until it listens. Its
// background copy starts as the restore ends: on a loaded machine a
// daemon at the copy's priority may have copied every page before the
// copy first gets the CPU, and checkFirstFault wants the copy to run
// before its memory has arrived; at nice 19 the daemon yields the CPU
// to the copy, whose faults it still serves.
func startLazyDaemon(t *testing.T, log string, args ...string) *bgProc {
	t.Helper()
	return startBg(t, program(t, "nice"), log, true, append([]string{"-n", "19", testutil.StasisBin(t)}, args...)...)
}

// startLazyDump starts `stasis dump --lazy-pages` of pid on a free port
// and waits until its images are complete (it then serves the pages).
func startLazyDump(t *testing.T, pid int, dir string) (*bgProc, int) {
	t.Helper()
	port := freePort(t, "127.0.0.1")
	log := filepath.Join(t.TempDir(), "dump.log")
	p := startBg(t, testutil.StasisBin(t), log, false, "dump", "-t", strconv.Itoa(pid), "-D", dir, "--lazy-pages",
		"--address", "127.0.0.1", "--port", strconv.Itoa(port), "-v4", "-o", log)
	testutil.WaitFor(t, 30*time.Second, "the lazy dump's images", func() bool {
		select {
		case code := <-p.done:
			t.Fatalf("dump --lazy-pages exited %d before serving\n%s\n%s", code, p.stderr.String(), tail(p.logText(), 2000))
		default:
		}
		return strings.Contains(p.logText(), "lazy dump: serving")
	})
	return p, port
}

// lazyDest copies the images of a dump to dst, the "destination".
func lazyDest(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	mergeImages(t, src, dst)
	return dst
}

func victimLog(v *testutil.Victim) string {
	b, _ := os.ReadFile(v.Log)
	return string(b)
}

var lazyAnswer = regexp.MustCompile(`answer: (\d+) of (\d+) pages resident`)

// checkAnswered: the copy answered, then read every page of its memory.
func checkAnswered(t *testing.T, v *testutil.Victim) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, "the copy's check of its memory", func() bool {
		return strings.Contains(victimLog(v), "verified") || strings.Contains(victimLog(v), "FAIL")
	})
	m := lazyAnswer.FindStringSubmatch(victimLog(v))
	if m == nil {
		t.Fatalf("the copy never answered\n%s", v.LogTail())
	}
	t.Logf("the copy answered with %s of %s pages of its memory resident", m[1], m[2])
	testutil.AssertContains(t, victimLog(v), "verified "+m[2]+" pages")
}

// checkFirstFault: the daemon's first fault came before every page was
// in: a task ran before its memory had arrived.
func checkFirstFault(t *testing.T, log string) {
	t.Helper()
	m := regexp.MustCompile(`first fault of a running task.*"pages in"=(\d+) of=(\d+)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("the daemon served no fault of a running task\n%s", tail(log, 2000))
	}
	in, _ := strconv.Atoi(m[1])
	all, _ := strconv.Atoi(m[2])
	t.Logf("first fault with %d of %d pages in", in, all)
	if in >= all {
		t.Errorf("the first fault came with %d of %d pages in: the copy did not run before its memory arrived", in, all)
	}
}

// TestLazyPages: a victim is dumped with --lazy-pages (frozen, serving its
// pages), restored with --lazy-pages into a new pid namespace beside a
// lazy-pages daemon asking that page server; the copy answers before its
// memory has all arrived, then reads every page. Once the daemon has
// every page it exits 0, the dump kills the source and exits 0. The
// local form (a dump without --lazy-pages, the daemon reading the images)
// works the same way.
func TestLazyPages(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	for _, mode := range []string{"page-server", "local"} {
		t.Run(mode, func(t *testing.T) {
			// Read from the images, the background copy is quick (64 MiB
			// in ~40 ms on an idle VM, sometimes all done before the
			// restored task first runs): more memory keeps it going
			// until the task faults.
			mib := lazyMiB()
			if n, err := strconv.Atoi(mib); err == nil && mode == "local" {
				mib = strconv.Itoa(4 * n)
			}
			v := testutil.StartVictim(t, "lazy", mib)
			v.WaitReady(t)
			src := t.TempDir()
			var dump *bgProc
			args := []string{"lazy-pages", "--status-fd", "3", "-v4"}
			if mode == "page-server" {
				var port int
				dump, port = startLazyDump(t, v.Pid, src)
				args = append(args, "--page-server", "--address", "127.0.0.1", "--port", strconv.Itoa(port))
			} else {
				testutil.Dump(t, v.Pid, src)
				v.Reap(t)
			}
			dst := lazyDest(t, src)
			dlog := filepath.Join(t.TempDir(), "lazy-pages.log")
			daemon := startLazyDaemon(t, dlog, append(args, "-D", dst, "-o", dlog)...)
			c := testutil.StartRestorePidNS(t, dst, "--lazy-pages")
			c.WaitRestored(t, v.Pid)
			if code := daemon.wait(t, "lazy-pages", 60*time.Second); code != 0 {
				t.Fatalf("lazy-pages exited %d\n%s\n%s", code, daemon.stderr.String(), tail(daemon.logText(), 3000))
			}
			checkFirstFault(t, daemon.logText())
			if dump != nil {
				if code := dump.wait(t, "dump --lazy-pages", 30*time.Second); code != 0 {
					t.Fatalf("dump --lazy-pages exited %d\n%s", code, tail(dump.logText(), 2000))
				}
				v.Reap(t) // killed once every page was served
			}
			checkAnswered(t, v)
			if err := unix.Kill(c.HostPid, unix.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := c.Wait(t, 30*time.Second); code != 0 {
				t.Fatalf("the copy exited %d\n%s", code, v.LogTail())
			}
			testutil.AssertContains(t, victimLog(v), "PASS")
		})
	}
}

// cutProxy forwards one connection to target, but only the first limit
// bytes from target back: then it drops both sides (a page server
// connection lost mid-way).
func cutProxy(t *testing.T, target string, limit int64) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		l.Close()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			return
		}
		var once sync.Once
		drop := func() { once.Do(func() { c.Close(); s.Close() }) }
		go func() { _, _ = io.Copy(s, c); drop() }()
		_, _ = io.CopyN(c, s, limit)
		drop()
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// TestLazyPagesDropped: the page server connection is dropped mid-way.
// (And before that: the images of a lazy dump restored without
// --lazy-pages, or with it but no daemon, are refused, naming why.)
// The daemon fails saying how many pages it could not serve, which it
// poisoned: the copy dies of SIGBUS at the first of them instead of
// running on with zeroes, and its pid namespace is gone. The dump fails
// and leaves the source running, whose memory is intact.
func TestLazyPagesDropped(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "lazy", lazyMiB())
	v.WaitReady(t)
	src := t.TempDir()
	dump, port := startLazyDump(t, v.Pid, src)
	proxy := cutProxy(t, "127.0.0.1:"+strconv.Itoa(port), 4<<20)
	dst := lazyDest(t, src)

	// Bad input first: a lazy dump's images restored without
	// --lazy-pages, or with it but no daemon listening, are refused
	// before anything is made.
	msg := testutil.RestoreFail(t, dst, "--pidns")
	testutil.AssertContains(t, msg, "pagemap-"+strconv.Itoa(v.Pid)+".img", "lazy (dump --lazy-pages)", "restore with --lazy-pages")
	msg = testutil.RestoreFail(t, dst, "--pidns", "--lazy-pages")
	testutil.AssertContains(t, msg, "connect to the lazy-pages daemon", "lazy-pages.socket")

	dlog := filepath.Join(t.TempDir(), "lazy-pages.log")
	daemon := startBg(t, testutil.StasisBin(t), dlog, true, "lazy-pages", "--status-fd", "3", "-D", dst,
		"--page-server", "--address", "127.0.0.1", "--port", strconv.Itoa(proxy), "-v4", "-o", dlog)
	c := testutil.StartRestorePidNS(t, dst, "--lazy-pages")

	if code := daemon.wait(t, "lazy-pages", 60*time.Second); code == 0 {
		t.Fatalf("lazy-pages exited 0 though its page server went away\n%s", tail(daemon.logText(), 2000))
	}
	msg = daemon.stderr.String()
	t.Logf("lazy-pages: %s", strings.TrimSpace(msg))
	testutil.AssertContains(t, msg, "page server 127.0.0.1:"+strconv.Itoa(proxy), "closed the connection", "pages of the restored tasks: lazy pages not served", "poisoned", "SIGBUS")
	if code := c.Wait(t, 30*time.Second); code != 128+int(unix.SIGBUS) {
		t.Errorf("stasis restore of the copy exited %d, want its root's %d (SIGBUS)\n%s", code, 128+int(unix.SIGBUS), v.LogTail())
	}
	if strings.Contains(victimLog(v), "verified") {
		t.Errorf("the copy read all its memory though the pages never came\n%s", v.LogTail())
	}
	if code := dump.wait(t, "dump --lazy-pages", 30*time.Second); code == 0 {
		t.Fatalf("dump --lazy-pages exited 0 though the daemon went away")
	}
	testutil.AssertContains(t, dump.stderr.String(), "the tree was resumed")
	testutil.AssertRunning(t, v.Pid)
	v.TermAndCheck(t)
}

// TestLazyPagesCRIU: criu 4.2's lazy-pages daemon asks the stasis lazy
// dump for the pages of a stasis restore --lazy-pages (criu's own lazy
// dump cannot run here: it keeps the pages in 4 MiB pipes, above the
// default fs.pipe-max-size of 1 MiB).
func TestLazyPagesCRIU(t *testing.T) {
	testutil.RequireRoot(t)
	criu := testutil.RequireCRIU(t)
	t.Parallel()
	v := testutil.StartVictim(t, "lazy", lazyMiB())
	v.WaitReady(t)
	src := t.TempDir()
	dump, port := startLazyDump(t, v.Pid, src)
	dst := lazyDest(t, src)
	dlog := filepath.Join(dst, "criu-lazy-pages.log")
	daemon := startBg(t, criu, dlog, true, "lazy-pages", "--status-fd", "3", "-D", dst, "--page-server",
		"--address", "127.0.0.1", "--port", strconv.Itoa(port), "-v4", "-o", filepath.Base(dlog))
	c := testutil.StartRestorePidNS(t, dst, "--lazy-pages")
	c.WaitRestored(t, v.Pid)
	if code := daemon.wait(t, "criu lazy-pages", 60*time.Second); code != 0 {
		t.Fatalf("criu lazy-pages exited %d: %s\n%s", code, testutil.CriuErrors(dlog), daemon.stderr.String())
	}
	if m := regexp.MustCompile(`UFFD transferred pages: \((\d+)/(\d+)\)`).FindStringSubmatch(daemon.logText()); m == nil || m[1] != m[2] {
		t.Errorf("criu lazy-pages transferred %v", m)
	}
	if code := dump.wait(t, "dump --lazy-pages", 30*time.Second); code != 0 {
		t.Fatalf("dump --lazy-pages exited %d\n%s", code, tail(dump.logText(), 2000))
	}
	v.Reap(t)
	checkAnswered(t, v)
	if err := unix.Kill(c.HostPid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := c.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("the copy exited %d\n%s", code, v.LogTail())
	}
	testutil.AssertContains(t, victimLog(v), "PASS")
}

// TestLazyPagesTree: a tree of 20 processes with zombies, sessions and
// memory shared copy-on-write, dumped with -R and restored lazily (the
// daemon reading the images) into a new pid namespace: one userfaultfd
// per process, a zombie's pid sent negated; the copy's tree is the
// original's and every process passes its own check.
func TestLazyPagesTree(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v, tree := startTreeVictim(t, "tree")
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "-R")
	dlog := filepath.Join(t.TempDir(), "lazy-pages.log")
	daemon := startBg(t, testutil.StasisBin(t), dlog, true, "lazy-pages", "--status-fd", "3", "-D", dir, "-v4", "-o", dlog)
	c := testutil.StartRestorePidNS(t, dir, "--lazy-pages")
	c.WaitRestored(t, v.Pid)
	testutil.WaitTree(t, c.HostPid, tree, true, 5*time.Second)
	if code := daemon.wait(t, "lazy-pages", 60*time.Second); code != 0 {
		t.Fatalf("lazy-pages exited %d\n%s\n%s", code, daemon.stderr.String(), tail(daemon.logText(), 3000))
	}
	m := regexp.MustCompile(`every page copied" tasks=(\d+)`).FindStringSubmatch(daemon.logText())
	if m == nil {
		t.Fatalf("lazy-pages log:\n%s", tail(daemon.logText(), 2000))
	}
	t.Logf("lazy-pages served %s processes", m[1])
	if err := unix.Kill(c.HostPid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := c.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("the copy exited %d\n%s", code, v.LogTail())
	}
	v.TermAndCheck(t)
}

// TestLazyPagesCRIURestore: criu 4.2's restore --lazy-pages, in a pid and
// mount namespace of its own (unshare: criu has no --pidns), is served by
// a stasis lazy-pages daemon asking a stasis lazy dump.
func TestLazyPagesCRIURestore(t *testing.T) {
	testutil.RequireRoot(t)
	criu := testutil.RequireCRIU(t)
	unshare := testutil.RequireTool(t, "unshare")
	t.Parallel()
	v := testutil.StartVictim(t, "lazy", lazyMiB())
	v.WaitReady(t)
	src := t.TempDir()
	dump, port := startLazyDump(t, v.Pid, src)
	dst := lazyDest(t, src)
	dlog := filepath.Join(t.TempDir(), "lazy-pages.log")
	daemon := startLazyDaemon(t, dlog, "lazy-pages", "--status-fd", "3", "-D", dst,
		"--page-server", "--address", "127.0.0.1", "--port", strconv.Itoa(port), "-v4", "-o", dlog)
	clog := filepath.Join(dst, "criu-restore.log")
	r := startBg(t, unshare, clog, false, "--pid", "--mount", "--fork", "--mount-proc", criu, "restore", "-D", dst, "--lazy-pages", "-v4", "-o", filepath.Base(clog))
	if code := daemon.wait(t, "lazy-pages", 60*time.Second); code != 0 {
		t.Fatalf("lazy-pages exited %d\n%s\ncriu: %s", code, daemon.stderr.String(), testutil.CriuErrors(clog))
	}
	checkFirstFault(t, daemon.logText())
	if code := dump.wait(t, "dump --lazy-pages", 30*time.Second); code != 0 {
		t.Fatalf("dump --lazy-pages exited %d\n%s", code, tail(dump.logText(), 2000))
	}
	v.Reap(t)
	checkAnswered(t, v)
	// unshare -> criu (pid 1 there) -> the copy.
	var copyPid int
	testutil.WaitFor(t, 10*time.Second, "the copy under criu", func() bool {
		for _, c := range testutil.Children(r.cmd.Process.Pid) {
			if kids := testutil.Children(c); len(kids) == 1 {
				copyPid = kids[0]
				return true
			}
		}
		return false
	})
	if err := unix.Kill(copyPid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the copy's check", func() bool {
		return strings.Contains(victimLog(v), "PASS") || strings.Contains(victimLog(v), "check(s) failed")
	})
	testutil.AssertContains(t, victimLog(v), "PASS")
	r.wait(t, "criu restore", 30*time.Second)
}
