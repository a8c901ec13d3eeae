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
	testutil.RequireRoot(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(w.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("pipe:[%d]", st.Ino)

	ready := filepath.Join(t.TempDir(), "ready")
	logf, err := os.Create(filepath.Join(t.TempDir(), "seqout.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(testutil.BuildVictim(t, "seqout"), ready)
	cmd.Stdout, cmd.Stderr = w, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	testutil.Track(t, []int{pid}, pid)
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	testutil.WaitFor(t, 10*time.Second, "victim ready", func() bool { _, err := os.Stat(ready); return err == nil })

	lines := bufio.NewScanner(r)
	next := uint64(0)
	read := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if !lines.Scan() {
				t.Fatalf("pipe closed after %d numbers", next)
			}
			got, err := strconv.ParseUint(lines.Text(), 10, 64)
			if err != nil || got != next {
				t.Fatalf("read %q from the pipe, want %d", lines.Text(), next)
			}
			next++
		}
	}
	read(10)

	msg := testutil.DumpFail(t, pid, t.TempDir())
	testutil.AssertContains(t, msg, key, "outside the dumped tree", "--external "+key, "--inherit-fd fd[N]:"+key)
	read(10) // still running, still writing

	dir := t.TempDir()
	testutil.Dump(t, pid, dir, "--external", key)
	<-waited
	testutil.CheckImages(t, dir)

	rs := exec.Command(testutil.StasisBin(t), "restore", "-D", dir, "-d", "--inherit-fd", "fd[3]:"+key)
	rs.ExtraFiles = []*os.File{w}
	if out, err := rs.CombinedOutput(); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	testutil.Track(t, []int{pid})
	read(50) // the restored victim writes on into the same pipe
	if err := unix.Kill(pid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for lines.Scan() {
		if lines.Text() == "PASS" {
			return
		}
		if _, err := strconv.ParseUint(lines.Text(), 10, 64); err != nil {
			t.Fatalf("victim said %q", lines.Text())
		}
	}
	t.Fatal("no PASS from the restored victim")
}

// TestInheritFdFile: --inherit-fd fd[3]:PATH makes the restored task use
// the file stasis got as fd 3 instead of reopening PATH: the counter goes
// on in that other file, and PATH is left alone.
func TestInheritFdFile(t *testing.T) {
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
