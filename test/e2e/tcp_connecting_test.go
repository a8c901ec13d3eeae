package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// pythonConnect connects to 127.0.0.1:PORT, non-blocking (waits for the
// socket to become writable, as event loops do) or blocking, creating
// READY once its connect is under way, and sends "hello" once connected.
// On SIGTERM it exits 0 if the connect succeeded and the bytes were sent.
const pythonConnect = `
import os, select, signal, socket, sys
port, mode, ready = int(sys.argv[1]), sys.argv[2], sys.argv[3]
state = {"sent": False}
def on_term(*a):
    if state["sent"]:
        print("PASS", flush=True)
        os._exit(0)
    print("FAIL: not connected at SIGTERM", file=sys.stderr, flush=True)
    os._exit(1)
signal.signal(signal.SIGTERM, on_term)
s = socket.socket()
if mode == "nonblock":
    s.setblocking(False)
    r = s.connect_ex(("127.0.0.1", port))
    open(ready, "w").close()
    while not select.select([], [s], [], 1)[1]:
        pass
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        print("FAIL: connect: %s" % os.strerror(err), file=sys.stderr, flush=True)
        os._exit(1)
    s.setblocking(True)
else:
    # READY before the connect, from this thread: the test waits for the
    # SYN_SENT socket anyway, and a timer thread still alive when SIGTERM
    # comes could take the signal while this one sleeps in pause().
    open(ready, "w").close()
    s.connect(("127.0.0.1", port))
# SIGTERM comes once the test has read the bytes, which can be before
# sendall returns here: it stays blocked and is taken by sigwait. (A
# handler and pause() would race: a SIGTERM landing between the unblock's
# check for signals and pause() would run the C handler and leave pause()
# asleep for good.)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
s.sendall(b"hello")
state["sent"] = True
signal.sigwait({signal.SIGTERM})
on_term()
`

// TestTCPConnecting: a connect still under way (SYN_SENT: the listener's
// accept queue is full, so its SYNs go unanswered) is dumped and starts
// again after the restore: non-blocking, stasis connects the socket from
// the same local port and the program's wait for writability ends;
// blocking, the program's connect system call runs again. Once the test
// accepts, the connection comes and the program's bytes arrive.
func TestTCPConnecting(t *testing.T) {
	testutil.RequireRoot(t)
	for _, mode := range []string{"nonblock", "block"} {
		t.Run(mode, func(t *testing.T) {
			// A listener whose accept queue (backlog 0: one connection)
			// is full: the next SYN is dropped.
			l, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(l)
			if err := unix.Bind(l, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
				t.Fatal(err)
			}
			if err := unix.Listen(l, 0); err != nil {
				t.Fatal(err)
			}
			sa, _ := unix.Getsockname(l)
			port := sa.(*unix.SockaddrInet4).Port
			filler, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(filler)
			if err := unix.Connect(filler, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
				t.Fatal(err)
			}

			work := t.TempDir()
			script, ready := filepath.Join(work, "connect.py"), filepath.Join(work, "ready")
			if err := os.WriteFile(script, []byte(pythonConnect), 0o644); err != nil {
				t.Fatal(err)
			}
			v := testutil.StartProgram(t, program(t, "python3"), script, strconv.Itoa(port), mode, ready)
			v.Ready = ready
			v.WaitReady(t)
			testutil.WaitFor(t, 5*time.Second, "the program's socket in SYN_SENT", func() bool {
				return countTCPState(t, port, 2) == 1
			})
			dir := t.TempDir()
			testutil.Dump(t, v.Pid, dir, "--tcp-established")
			v.Reap(t)
			testutil.CheckImages(t, dir)
			testutil.RestoreDetached(t, dir, v, "--tcp-established")

			// Free the queue: the next SYN of the program comes in.
			a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(a)
			var conn int
			testutil.WaitFor(t, 10*time.Second, "the program's connection", func() bool {
				var err error
				conn, _, err = unix.Accept4(l, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
				return err == nil
			})
			defer unix.Close(conn)
			buf := make([]byte, 16)
			var n int
			testutil.WaitFor(t, 5*time.Second, "the program's bytes", func() bool {
				n, err = unix.Read(conn, buf)
				return n > 0
			})
			if string(buf[:n]) != "hello" {
				t.Errorf("the program sent %q, want hello", buf[:n])
			}
			v.TermAndCheck(t)
		})
	}
}

// countTCPState counts the connections to 127.0.0.1:port (from their
// client's side) in TCP state st, from /proc/net/tcp.
func countTCPState(t *testing.T, port, st int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	want := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && len(f[2]) > 5 && f[2][len(f[2])-5:] == want && f[3] == fmt.Sprintf("%02X", st) {
			n++
		}
	}
	return n
}
