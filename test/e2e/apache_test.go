package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestServerApache: Apache httpd 2.4, a master running as root and
// children running as www-data that share the scoreboard (shared
// anonymous memory) and the listening socket, with each of two MPMs:
// event (one child, a listener thread and a pool of workers; idle
// keep-alive connections wait in its epoll set) and prefork (four
// single-threaded children, each one connection at a time). A client
// downloads a large file that mod_ratelimit paces, pausing itself, while
// another keeps an idle keep-alive connection; the server is checkpointed
// (--tcp-established) three times during the download, by stasis, by
// CRIU 4.2 for the figures (it refuses the tree here) and by stasis again,
// each time with bytes queued to the client. The download completes with the
// file's sha256, the idle connection serves another request, a new
// connection is served, and `apachectl -k graceful` with the test's
// config replaces the children; a stop (SIGTERM) ends the master with 0.
func TestServerApache(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	apache2 := testutil.RequireTool(t, "apache2")
	apachectl := testutil.RequireTool(t, "apachectl")
	for _, mpm := range []string{"event", "prefork"} {
		t.Run(mpm, func(t *testing.T) {
			t.Parallel()
			testApache(t, apache2, apachectl, mpm)
		})
	}
}

// apacheMPM is the MPM part of the test's config: a fixed set of
// children (no spare-server maintenance spawns or stops one around a
// checkpoint, the tree restored is the tree dumped), and room for a new
// generation beside the old one at the graceful restart.
var apacheMPM = map[string]string{
	"event": `ServerLimit 2
StartServers 1
ThreadLimit 8
ThreadsPerChild 8
MaxRequestWorkers 16
MinSpareThreads 1
MaxSpareThreads 64`,
	"prefork": `ServerLimit 8
StartServers 4
MinSpareServers 1
MaxSpareServers 8
MaxRequestWorkers 8`,
}

func testApache(t *testing.T, apache2, apachectl, mpm string) {
	// The children run as www-data: the ServerRoot and the documents
	// must be readable by them, which t.TempDir (0700) is not.
	work, err := os.MkdirTemp("", "stasis-apache-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	htdocs := filepath.Join(work, "htdocs")
	for _, d := range []string{htdocs, filepath.Join(htdocs, "slow"), filepath.Join(work, "run")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	const size = 32 << 20
	want := writeRandomFile(t, filepath.Join(htdocs, "slow", "big.bin"), size)
	page := func(name string) string { return strings.Repeat("apache page "+name+"\n", 500) }
	for _, n := range []string{"a", "b"} {
		if err := os.WriteFile(filepath.Join(htdocs, n+".txt"), []byte(page(n)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t, "127.0.0.1")
	modules := "/usr/lib/apache2/modules"
	errorLog := filepath.Join(work, "error.log")
	// apache2.conf in the ServerRoot is what `apache2 -d ServerRoot` and
	// Debian's apachectl (APACHE_CONFDIR) read; envvars beside it is what
	// apachectl sources, so that it makes no dir of its own under /run.
	writeConfig(t, work, "apache2.conf", fmt.Sprintf(`ServerRoot %[1]s
ServerName localhost
Listen 127.0.0.1:%[2]d
PidFile %[1]s/run/apache2.pid
DefaultRuntimeDir %[1]s/run
ErrorLog %[4]s
LogLevel info
LoadModule mpm_%[5]s_module %[3]s/mod_mpm_%[5]s.so
LoadModule authz_core_module %[3]s/mod_authz_core.so
LoadModule env_module %[3]s/mod_env.so
LoadModule ratelimit_module %[3]s/mod_ratelimit.so
User www-data
Group www-data
DocumentRoot %[1]s/htdocs
KeepAlive On
KeepAliveTimeout 300
MaxKeepAliveRequests 0
# 8 MiB/s: the 32 MiB download lasts about 4 s and the checkpoints.
<Location /slow>
	SetOutputFilter RATE_LIMIT
	SetEnv rate-limit 8192
</Location>
%[6]s
`, work, port, modules, errorLog, mpm, apacheMPM[mpm]))
	writeConfig(t, work, "envvars", fmt.Sprintf(`export APACHE_RUN_USER=www-data APACHE_RUN_GROUP=www-data
export APACHE_RUN_DIR=%[1]s/run APACHE_LOCK_DIR=%[1]s/run APACHE_PID_FILE=%[1]s/run/apache2.pid APACHE_LOG_DIR=%[1]s
`, work))

	v := testutil.StartProgram(t, apache2, "-d", work, "-DFOREGROUND")
	waitListening(t, v, port)
	children := map[string]int{"event": 1, "prefork": 4}[mpm]
	waitApacheChildren(t, v, children, mpm)
	t.Logf("apache2 (%s) tree:\n%s", mpm, testutil.FormatTree(testutil.MustTree(t, v.Pid)))

	// The idle keep-alive connection: two requests, then nothing until
	// after the checkpoints.
	idle := dialServer(t, port)
	ibr := bufio.NewReader(idle)
	get := func(path, want string) {
		t.Helper()
		body, err := httpGet(idle, ibr, path)
		if err != nil {
			t.Fatalf("the keep-alive connection: %v\n--- error.log ---\n%s", err, readTail(errorLog))
		}
		if body != want {
			t.Fatalf("GET %s: %d bytes, want %d", path, len(body), len(want))
		}
	}
	get("/a.txt", page("a"))
	get("/b.txt", page("b"))

	// The download: the server sends at 8 MiB/s, the client reads 64 KiB
	// at a time. Before each checkpoint it stops reading until the server
	// has bytes queued to it that it cannot send (both socket buffers
	// full): the server is mid-way through the response at the dump,
	// however slow the machine; after the last one it reads the rest with
	// a pause now and then.
	c := dialServer(t, port)
	d := startDownload(t, c, "/slow/big.bin")
	if d.total != size {
		t.Fatalf("Content-Length %d, want %d", d.total, size)
	}
	// CRIU 4.2 refuses apache's tree here (its children changed uid, and
	// criu has no CAP_SYS_RESOURCE to read their rlimits): a figure, the
	// tree left running. A second dump by stasis is of the connection the
	// first restore repaired.
	var runs []ckptRun
	for i, tool := range ckptTools(t, true) {
		if err := d.read(int64(4+8*i)<<20, 0); err != nil {
			t.Fatalf("%v\n--- error.log ---\n%s", err, readTail(errorLog))
		}
		queued := waitSendQueue(t, port, c.LocalAddr().(*net.TCPAddr).Port)
		run, _ := appRoundTrip(t, v, tool, "--tcp-established")
		runs = append(runs, run)
		if run.refused == "" {
			t.Logf("%s: the client had read %d MiB, the server had %d KiB queued to it", tool, d.got>>20, queued>>10)
		}
	}
	if err := d.read(-1, 5*time.Millisecond); err != nil {
		t.Fatalf("%v\n--- error.log ---\n%s", err, readTail(errorLog))
	}
	if got := d.h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Fatalf("sha256 of the download %x, want the file's %x", got, want)
	}
	t.Logf("apache2 %s, the same run: %s; the download's longest read took %v", mpm, figures(runs), d.maxGap.Round(time.Millisecond))

	get("/b.txt", page("b"))
	n := dialServer(t, port)
	if body, err := httpGet(n, bufio.NewReader(n), "/a.txt"); err != nil || body != page("a") {
		t.Fatalf("a new connection after the restore: %d bytes, %v", len(body), err)
	}

	// apachectl with the test's config (APACHE_CONFDIR: apache2 -d work)
	// signals the restored master, which starts a new generation of
	// children.
	old := testutil.Pids(testutil.MustTree(t, v.Pid)[1:])
	graceful := time.Now()
	ctl := exec.Command(apachectl, "-k", "graceful")
	ctl.Env = append(os.Environ(), "APACHE_CONFDIR="+work)
	if out, err := ctl.CombinedOutput(); err != nil {
		t.Fatalf("apachectl -k graceful: %v\n%s", err, out)
	}
	testutil.WaitFor(t, 15*time.Second, "a new generation of children after the graceful restart", func() bool {
		ts, err := testutil.Tree(v.Pid)
		if err != nil {
			return false
		}
		fresh := 0
		for _, x := range ts[1:] {
			if !slices.Contains(old, x.Pid) && !x.Zombie() {
				fresh++
			}
		}
		return fresh >= children
	})
	testutil.WaitFor(t, 10*time.Second, "the error log to say the graceful restart is done", func() bool {
		b, _ := os.ReadFile(errorLog)
		return bytes.Count(b, []byte("resuming normal operations")) == 2
	})
	n = dialServer(t, port)
	if body, err := httpGet(n, bufio.NewReader(n), "/b.txt"); err != nil || body != page("b") {
		t.Fatalf("a new connection after the graceful restart: %d bytes, %v\n%s", len(body), err, readTail(errorLog))
	}
	t.Logf("apachectl -k graceful: a new generation serving after %v", time.Since(graceful).Round(time.Millisecond))
	v.Signal(t, unix.SIGTERM)
	if code := v.Wait(t, 15*time.Second); code != 0 {
		t.Errorf("apache2 exited with %d after SIGTERM, want 0\n%s", code, readTail(errorLog))
	}
	checkImages(t, runs)
}

// waitApacheChildren waits until the master has its n children, each
// with all its threads (event: the workers, the listener and the main
// thread).
func waitApacheChildren(t *testing.T, v *testutil.Victim, n int, mpm string) {
	t.Helper()
	threads := map[string]int{"event": 8 + 2, "prefork": 1}[mpm]
	testutil.WaitFor(t, 15*time.Second, fmt.Sprintf("apache2 to have %d children of %d thread(s)", n, threads), func() bool {
		ts, err := testutil.Tree(v.Pid)
		if err != nil || len(ts) != 1+n {
			return false
		}
		for _, x := range ts[1:] {
			if x.Threads != threads {
				return false
			}
		}
		return true
	})
}

// waitSendQueue waits until the server's socket on 127.0.0.1:port of the
// client's connection from clientPort has bytes in its send queue (the
// tx_queue of its /proc/net/tcp line), and returns them.
func waitSendQueue(t *testing.T, port, clientPort int) int {
	t.Helper()
	local, remote := fmt.Sprintf("0100007F:%04X", port), fmt.Sprintf("0100007F:%04X", clientPort)
	n := 0
	testutil.WaitFor(t, 10*time.Second, "the server to have bytes queued to the client", func() bool {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 5 || f[1] != local || f[2] != remote {
				continue
			}
			tx, _, _ := strings.Cut(f[4], ":")
			q, err := strconv.ParseInt(tx, 16, 64)
			if err != nil {
				t.Fatalf("/proc/net/tcp: %q", line)
			}
			n = int(q)
		}
		return n > 0
	})
	return n
}
