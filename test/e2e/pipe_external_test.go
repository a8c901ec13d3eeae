package e2e

import (
	"bufio"
	"fmt"
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

// TestPipeOutsideTree: a victim writes numbers into a pipe the test reads.
// Dumping it fails with an error that names the pipe and the way out
// (--external, --inherit-fd) and leaves it running; dumped with --external
// pipe:[INO] and restored with --inherit-fd fd[3]:pipe:[INO] (the test
// passing the same pipe), it goes on writing into the test's pipe with
// no number lost or repeated.
func TestPipeOutsideTree(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v := startSeqoutOnPipe(t)
	msg := testutil.DumpFail(t, v.pid, t.TempDir())
	testutil.AssertContains(t, msg, v.key, "outside the dumped tree", "--external "+v.key, "--inherit-fd fd[N]:"+v.key)
	v.read(t, 10) // still running, still writing

	dir := t.TempDir()
	testutil.Dump(t, v.pid, dir, "--external", v.key)
	<-v.waited
	testutil.CheckImages(t, dir)

	rs := exec.Command(testutil.StasisBin(t), "restore", "-D", dir, "-d", "--inherit-fd", "fd[3]:"+v.key)
	rs.ExtraFiles = []*os.File{v.w}
	if out, err := rs.CombinedOutput(); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	testutil.Track(t, []int{v.pid})
	v.finish(t)
}

// TestInheritFdFile: --inherit-fd fd[3]:PATH makes the restored task use
// the file stasis got as fd 3 instead of reopening PATH: the counter goes
// on in that other file, and PATH is left alone.
func TestInheritFdFile(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v, status := counterVictim(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	before, _ := os.ReadFile(status)
	other := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(other, []byte("                   0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(other, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rs := exec.Command(testutil.StasisBin(t), "restore", "-D", dir, "-d", "--inherit-fd", "fd[3]:"+strings.TrimPrefix(status, "/"))
	rs.ExtraFiles = []*os.File{f}
	if out, err := rs.CombinedOutput(); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	testutil.Track(t, []int{v.Pid})
	testutil.WaitFor(t, 5*time.Second, "the counter to go on in the inherited file", func() bool {
		return testutil.ReadCounter(t, other) > 20
	})
	if after, _ := os.ReadFile(status); string(after) != string(before) {
		t.Errorf("the dumped file changed after the restore: %q -> %q", before, after)
	}
}

// seqoutOnPipe is the seqout victim writing numbers into a pipe the test
// holds (its stdout), as a runtime's container writes into the runtime's
// pipes.
type seqoutOnPipe struct {
	pid    int
	key    string   // pipe:[INO], the key of --external and --inherit-fd
	w      *os.File // the pipe's write end, to hand to the restore
	waited chan error
	lines  *bufio.Scanner
	next   uint64
}

// startSeqoutOnPipe starts the victim and reads its first 10 numbers.
func startSeqoutOnPipe(t *testing.T) *seqoutOnPipe {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	var st unix.Stat_t
	if err := unix.Fstat(int(w.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(t.TempDir(), "ready")
	logf, err := os.Create(filepath.Join(t.TempDir(), "seqout.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	cmd := exec.Command(testutil.BuildVictim(t, "seqout"), ready)
	cmd.Stdout, cmd.Stderr = w, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &seqoutOnPipe{pid: cmd.Process.Pid, key: fmt.Sprintf("pipe:[%d]", st.Ino), w: w,
		waited: make(chan error, 1), lines: bufio.NewScanner(r)}
	testutil.Track(t, []int{s.pid}, s.pid)
	go func() { s.waited <- cmd.Wait() }()
	testutil.WaitFor(t, 10*time.Second, "victim ready", func() bool { _, err := os.Stat(ready); return err == nil })
	s.read(t, 10)
	return s
}

// read reads the next n numbers, which must follow the last one read.
func (s *seqoutOnPipe) read(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if !s.lines.Scan() {
			t.Fatalf("pipe closed after %d numbers", s.next)
		}
		got, err := strconv.ParseUint(s.lines.Text(), 10, 64)
		if err != nil || got != s.next {
			t.Fatalf("read %q from the pipe, want %d", s.lines.Text(), s.next)
		}
		s.next++
	}
}

// finish reads 50 more numbers from the restored victim, stops it and
// wants its PASS.
func (s *seqoutOnPipe) finish(t *testing.T) {
	t.Helper()
	s.read(t, 50) // the restored victim writes on into the same pipe
	if err := unix.Kill(s.pid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for s.lines.Scan() {
		if s.lines.Text() == "PASS" {
			return
		}
		if _, err := strconv.ParseUint(s.lines.Text(), 10, 64); err != nil {
			t.Fatalf("victim said %q", s.lines.Text())
		}
	}
	t.Fatal("no PASS from the restored victim")
}
