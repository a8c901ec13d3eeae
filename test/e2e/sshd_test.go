package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestSshdSession: Debian's sshd, with its own config and keys on the
// loopback of a network namespace of the test (where the ssh client and
// stasis run too), has a logged-in ssh session (the client runs in a tmux
// pane, so the server allocates a pty) whose shell prints a counter. The
// session's tree (the per-connection sshd, its session child and the shell
// on the pty) is dumped with --tcp-established, killed and restored: the
// client never notices (the network lock holds its retransmissions), the
// counter goes on from where it was, and a command typed afterwards runs
// in the same shell (its variable is kept).
func TestSshdSession(t *testing.T) {
	testutil.RequireRoot(t)
	// A network namespace of the test's: sshd, the ssh client (nsenter)
	// and stasis (which dumps only trees of its own namespace) run there.
	ns := newLoopbackNS(t)
	srv := startSshd(t, ns, "127.0.0.1", 0)
	listener, userKey, port, slog := srv.listener, srv.userKey, srv.port, srv.log
	var conn int
	t.Cleanup(func() { endTree(t, &conn) })

	tm := startTmux(t)
	p := tm.firstPane()
	tm.waitScreen(p, "outer$", 5*time.Second)
	outer := tm.panePid(p)
	tm.typeLine(p, fmt.Sprintf("nsenter --net=/proc/%d/ns/net ssh -tt -i %s -p %d -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR root@127.0.0.1 'env PS1=se\"\"ss\\>\\  HISTFILE=/dev/null bash --norc --noprofile -i'", listener.Process.Pid, userKey, port))
	tm.waitScreen(p, "\nsess>", 10*time.Second) // capture-pane trims the trailing blank
	// The shell on the pty is the one bash under the listener; the root of
	// the session's tree is the per-connection sshd above it, a child of
	// the listener ("sshd: root@pts/N"; for root, with no privilege
	// separation child in between).
	var shell int
	testutil.WaitFor(t, 5*time.Second, "the session's shell under sshd", func() bool {
		shell = descendant(listener.Process.Pid, "bash")
		return shell > 0
	})
	conn = mustPPid(t, shell)
	for mustPPid(t, conn) != listener.Process.Pid {
		conn = mustPPid(t, conn)
	}
	if testutil.Comm(conn) != "sshd" {
		t.Fatalf("the session's shell %d is under %d (%s), not an sshd", shell, conn, testutil.Comm(conn))
	}
	tm.typeLine(p, "MARK=kept-$((6*7)); i=0; while :; do echo count-$i; i=$((i+1)); sleep 0.2; done")

	count := regexp.MustCompile(`(?m)^count-([0-9]+)$`)
	counts := func() []int {
		var ns []int
		for _, m := range count.FindAllStringSubmatch(tm.screen(p), -1) {
			n, _ := strconv.Atoi(m[1])
			ns = append(ns, n)
		}
		return ns
	}
	last := func() int {
		ns := counts()
		if len(ns) == 0 {
			return -1
		}
		return ns[len(ns)-1]
	}
	testutil.WaitFor(t, 5*time.Second, "the counter", func() bool { return last() >= 3 })

	// Without --tcp-established the dump names the flag and the session
	// goes on untouched.
	dir := t.TempDir()
	var msg string
	in(t, ns, func() { msg = testutil.DumpFail(t, conn, filepath.Join(t.TempDir(), "refused")) })
	testutil.AssertContains(t, msg, "--tcp-established")
	n := last()
	testutil.WaitFor(t, 5*time.Second, "the counter to go on after the refused dump", func() bool { return last() > n })

	in(t, ns, func() { testutil.Dump(t, conn, dir, "--tcp-established") })
	testutil.CheckImages(t, dir)
	before := last()
	tree := testutil.ImagePids(t, dir) // the loop's sleep of the moment too
	testutil.ReapTasks(t, tree)
	time.Sleep(time.Second) // the client waits; nothing moves on its screen
	if n := last(); n != before {
		t.Fatalf("the counter moved from %d to %d while the session was dumped", before, n)
	}

	// Without --tcp-established the restore names the flag and leaves
	// nothing behind; the lock still holds the connection.
	in(t, ns, func() { msg = testutil.RestoreFail(t, dir) })
	testutil.AssertContains(t, msg, "--tcp-established")

	log := filepath.Join(t.TempDir(), "restore.log")
	var r testutil.Result
	in(t, ns, func() {
		r = testutil.Run(t, 30*time.Second, "restore", "-D", dir, "-d", "--tcp-established", "-v4", "-o", log)
	})
	if r.Code != 0 {
		t.Fatalf("restore: %s\n%s", r, readFile(log))
	}
	t.Logf("restored %d tasks in %v", len(tree), r.Took.Round(time.Millisecond))
	t.Cleanup(func() {
		for _, pid := range tree {
			unix.Kill(pid, unix.SIGKILL)
		}
		reapGone(t, tree...)
	})
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("the counter to go on past %d", before), func() bool { return last() > before+3 })
	// The shell's loop went on from where it was: the screen shows one
	// unbroken sequence across the dump.
	if ns := counts(); ns[0] > before {
		t.Fatalf("the counts before the dump scrolled away: %v", ns)
	} else {
		for i := 1; i < len(ns); i++ {
			if ns[i] != ns[i-1]+1 {
				t.Fatalf("the counter jumps from %d to %d (last before the dump: %d):\n%s", ns[i-1], ns[i], before, tm.screen(p))
			}
		}
	}
	tm.keys(p, "C-c") // to the loop, the pty's foreground: the line discipline works
	tm.typeLine(p, "echo mark=$MARK; echo end-$((1+1))")
	sc := tm.waitScreen(p, "end-2", 5*time.Second)
	if !regexp.MustCompile(`(?m)^mark=kept-42`).MatchString(sc) {
		t.Errorf("the session's shell lost its variable:\n%s", sc)
	}
	tm.typeLine(p, "exit 5")
	testutil.WaitFor(t, 5*time.Second, "the ssh client to end", func() bool { return descendant(outer, "ssh") == 0 })
	tm.typeLine(p, "echo ssh-exit=$?")
	// "\nssh-exit=": the output line, not the typed command, which holds
	// "ssh-exit=" too and shows first.
	if sc := tm.waitScreen(p, "\nssh-exit=", 5*time.Second); !regexp.MustCompile(`(?m)^ssh-exit=5`).MatchString(sc) {
		t.Errorf("the ssh client did not end with the shell's status:\n%s\nsshd log:\n%s", sc, readFile(slog))
	}
}

// descendant is the first task found under pid running comm, or 0.
func descendant(pid int, comm string) int {
	for _, c := range testutil.Children(pid) {
		if testutil.Comm(c) == comm {
			return c
		}
		if d := descendant(c, comm); d > 0 {
			return d
		}
	}
	return 0
}

// nsOf is the network namespace of pid, as its /proc link names it.
func nsOf(t *testing.T, pid int) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// sshServer is an sshd of the test's (Debian's, with its own config, host
// key and an authorized user key for root) listening on addr:port in a
// network namespace of the test's; ended with the test.
type sshServer struct {
	listener *exec.Cmd
	userKey  string // the private key that logs in as root
	port     int
	log      string
}

// startSshd starts an sshServer on addr in ns, on port (0: a free one).
func startSshd(t *testing.T, ns netns.NsHandle, addr string, port int) *sshServer {
	t.Helper()
	sshd := testutil.RequireTool(t, "sshd")
	testutil.RequireTool(t, "ssh")
	testutil.RequireTool(t, "ssh-keygen")
	// sshd's privilege separation directory; the Debian package makes it
	// at boot through its service only.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	keygen := func(name string) string {
		t.Helper()
		p := filepath.Join(work, name)
		if out, err := exec.Command("timeout", "20", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", p).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen %s: %v\n%s", p, err, out)
		}
		return p
	}
	hostKey, userKey := keygen("host_key"), keygen("user_key")
	pub, err := os.ReadFile(userKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authorized := writeConfig(t, work, "authorized_keys", string(pub))
	if port == 0 {
		in(t, ns, func() { port = freePort(t, addr) })
	}
	cfg := writeConfig(t, work, "sshd_config", fmt.Sprintf(`Port %d
ListenAddress %s
HostKey %s
PidFile none
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
PrintLastLog no
UseDNS no
`, port, addr, hostKey, authorized))
	s := &sshServer{listener: exec.Command(sshd, "-D", "-e", "-f", cfg), userKey: userKey, port: port, log: filepath.Join(work, "sshd.log")}
	lf, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	s.listener.Stdout, s.listener.Stderr = lf, lf
	var serr error
	in(t, ns, func() { serr = s.listener.Start() })
	if serr != nil {
		t.Fatal(serr)
	}
	if a, b := nsOf(t, s.listener.Process.Pid), nsOf(t, os.Getpid()); a == b {
		t.Fatalf("sshd is in the test's network namespace %s", a)
	}
	t.Cleanup(func() {
		endTree(t, &s.listener.Process.Pid)
		if t.Failed() {
			t.Logf("sshd log:\n%s", readFile(s.log))
		}
	})
	testutil.WaitFor(t, 5*time.Second, "sshd to listen", func() bool {
		var err error
		in(t, ns, func() {
			var c net.Conn
			if c, err = net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), time.Second); err == nil {
				c.Close()
			}
		})
		return err == nil
	})
	return s
}
