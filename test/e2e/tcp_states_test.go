package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TCP states (include/net/tcp_states.h) as /proc/net/tcp and the images
// show them.
const (
	tcpStateFinWait1 = 4
	tcpStateLastAck  = 9
	tcpStateClosing  = 11
)

// The connections of these tests: the server sends 1 MiB and shuts its
// side down while the client reads nothing with a 4 KiB receive buffer,
// so the server's FIN waits behind most of that MiB in its send queue,
// unsent: the server is in FIN_WAIT1 (or, once the client has shut its
// side down too, LAST_ACK or CLOSING) when it is dumped.
const (
	tcpStatesTx = 1 << 20
	tcpStatesRx = 64 << 10
)

// dialSmallWindow connects to tcpsrv with a 4 KiB receive buffer.
func dialSmallWindow(t *testing.T, port int) *tcpClient {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &tcpClient{c: c.(*net.TCPConn), total: tcpStatesRx}
}

// serverConnState is the state of the server's end of the connection on
// port (127.0.0.1), from /proc/net/tcp; 0 if there is none.
func serverConnState(t *testing.T, port int) int {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 4 || !strings.HasSuffix(fl[1], fmt.Sprintf(":%04X", port)) || strings.HasSuffix(fl[2], ":0000") {
			continue
		}
		st, _ := strconv.ParseInt(fl[3], 16, 32)
		return int(st)
	}
	return 0
}

// tcpStateRoundTrip dumps tcpsrv with its connection in one of the states
// want, restores it, and finishes both streams: the client reads the whole
// MiB then EOF, sends what it has not sent yet, and the server checks
// every byte.
func tcpStateRoundTrip(t *testing.T, v *testutil.Victim, tc *tcpClient, port int, want ...int) {
	t.Helper()
	var st int
	testutil.WaitFor(t, 5*time.Second, fmt.Sprintf("the server's end in TCP state %v", want), func() bool {
		st = serverConnState(t, port)
		for _, w := range want {
			if st == w {
				return true
			}
		}
		return false
	})
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "--tcp-established")
	v.Reap(t)
	testutil.CheckImages(t, dir)
	if got := connState(t, dir); int(got) != st {
		t.Fatalf("connection dumped in TCP state %d, it was in %d", got, st)
	}
	t.Logf("dumped in TCP state %d", st)
	testutil.RestoreDetached(t, dir, v, "--tcp-established")
	if err := tc.read(0); err != nil || tc.rx != tcpStatesTx {
		t.Fatalf("the client read %d bytes then %v, want %d then EOF", tc.rx, err, tcpStatesTx)
	}
	if !tc.closed {
		if err := tc.write(tcpStatesRx - tc.tx); err != nil {
			t.Fatal(err)
		}
		if err := tc.c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
	}
	// The server checks at SIGTERM what it received: every byte and the
	// FIN must have reached it by then (acknowledged: the client's end,
	// which had the server's FIN, is closed or in TIME_WAIT).
	testutil.WaitFor(t, 10*time.Second, "the server to acknowledge the client's bytes and FIN", func() bool {
		s := tc.state(t)
		return s == unix.BPF_TCP_CLOSE || s == unix.BPF_TCP_TIME_WAIT
	})
	v.TermAndCheck(t)
}

func startTCPStatesServer(t *testing.T) (*testutil.Victim, int) {
	t.Helper()
	port := freePort(t, "127.0.0.1")
	v := testutil.StartVictim(t, "tcpsrv", "127.0.0.1", strconv.Itoa(port), strconv.Itoa(tcpStatesRx), strconv.Itoa(tcpStatesTx),
		strconv.Itoa(tcpStatesRx), "0")
	v.WaitReady(t)
	return v, port
}

// TestTCPFinWait1: the server has shut its side down, its FIN queued
// behind unsent data (FIN_WAIT1): after the restore the data and the FIN
// go out, the client reads every byte then EOF, and the server still
// reads what the client sends afterwards.
func TestTCPFinWait1(t *testing.T) {
	testutil.RequireRoot(t)
	v, port := startTCPStatesServer(t)
	tc := dialSmallWindow(t, port)
	tcpStateRoundTrip(t, v, tc, port, tcpStateFinWait1)
}

// TestTCPBothClosing: both ends have shut down; the client's FIN came to
// the server before or after its own (LAST_ACK, or CLOSING), the
// server's FIN still behind unsent data: after the restore the client
// gets every byte then EOF, the server got all the client sent then EOF.
func TestTCPBothClosing(t *testing.T) {
	testutil.RequireRoot(t)
	v, port := startTCPStatesServer(t)
	tc := dialSmallWindow(t, port)
	if err := tc.write(tcpStatesRx); err != nil {
		t.Fatal(err)
	}
	if err := tc.c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	tc.closed = true
	tcpStateRoundTrip(t, v, tc, port, tcpStateLastAck, tcpStateClosing)
}
