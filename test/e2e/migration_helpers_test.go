package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// Helpers of the migration tests (pre-dump chains, page servers).

// nextChange asks the track victim for its next change of the address
// space (SIGUSR1) and waits for it.
func nextChange(t *testing.T, v *testutil.Victim, n int) {
	t.Helper()
	v.Signal(t, 10) // SIGUSR1
	ready := fmt.Sprintf("%s.m%d", v.Ready, n)
	testutil.WaitFor(t, 10*time.Second, "change "+strconv.Itoa(n), func() bool {
		_, err := os.Stat(ready)
		return err == nil
	})
}

// stasisRun runs the stasis binary with a log of its own and fails the
// test unless it exits 0.
func stasisRun(t *testing.T, verb string, args ...string) testutil.Result {
	t.Helper()
	log := filepath.Join(t.TempDir(), verb+".log")
	r := testutil.Run(t, 60*time.Second, append(append([]string{verb}, args...), "-v4", "-o", log)...)
	if r.Code != 0 {
		b, _ := os.ReadFile(log)
		t.Fatalf("stasis %s failed\n%s\nlog:\n%s", verb, r, tail(string(b), 3000))
	}
	t.Logf("stasis %s in %v", verb, r.Took.Round(time.Millisecond))
	return r
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// pagesOf sums the pages with data (and in parent) of the pagemap of
// imgPid in dir.
func pagesOf(t *testing.T, dir string, pid int) (own, parent uint64) {
	t.Helper()
	_, ents := readPagemap(t, dir, fmt.Sprintf("pagemap-%d.img", pid))
	for _, pe := range ents {
		if pe.GetFlags()&peParent != 0 {
			parent += pe.GetNrPages()
		} else if pe.GetFlags()&pePresent != 0 {
			own += pe.GetNrPages()
		}
	}
	return own, parent
}

// pageServer is a page server process of a test (stasis' or criu's),
// listening once it returns.
type pageServer struct {
	cmd  *exec.Cmd
	port int
	done chan error
	log  string // its -o log, shown when it fails
}

// startPageServer starts `BIN page-server -D DIR --port P --status-fd 3`
// on a free port and waits for its status byte.
func startPageServer(t *testing.T, bin, dir string, extra ...string) *pageServer {
	t.Helper()
	for attempt := 0; ; attempt++ {
		port := freePort(t, "127.0.0.1")
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		log := filepath.Join(t.TempDir(), "page-server.log")
		args := append([]string{"page-server", "-D", dir, "--address", "127.0.0.1", "--port", strconv.Itoa(port), "--status-fd", "3", "-v4", "-o", log}, extra...)
		cmd := exec.Command(bin, args...)
		cmd.ExtraFiles = []*os.File{w}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		ps := &pageServer{cmd: cmd, port: port, done: make(chan error, 1), log: log}
		go func() { ps.done <- cmd.Wait() }()
		b := make([]byte, 1)
		_ = r.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, _ := r.Read(b)
		r.Close()
		if n == 1 {
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-ps.done
			})
			return ps
		}
		// The port was taken meanwhile (or the server failed): again.
		_ = cmd.Process.Kill()
		<-ps.done
		lb, _ := os.ReadFile(log)
		if attempt == 2 {
			t.Fatalf("%s page-server did not start:\n%s", bin, tail(string(lb), 2000))
		}
	}
}

// wait waits for the page server to end its session.
func (ps *pageServer) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-ps.done:
		ps.done <- err
		if err != nil {
			lb, _ := os.ReadFile(ps.log)
			t.Fatalf("page server: %v\n%s", err, tail(string(lb), 3000))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("page server still running 30 s after the dump")
	}
}

// mergeImages copies the regular files of src into dst (the local images
// of a dump beside the pages its page server received).
func mergeImages(t *testing.T, src, dst string) {
	t.Helper()
	copyImages(t, src, dst, func(os.DirEntry) bool { return true })
}
