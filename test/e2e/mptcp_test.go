package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// startGoHTTP starts the Go net/http server victim and returns it with
// its address.
func startGoHTTP(t *testing.T) (*testutil.Victim, string) {
	t.Helper()
	work := t.TempDir()
	ready, addrFile := filepath.Join(work, "ready"), filepath.Join(work, "addr")
	v := testutil.StartProgram(t, testutil.BuildGoVictim(t, "gohttp"), ready, addrFile)
	v.Ready = ready
	v.WaitReady(t)
	b, err := os.ReadFile(addrFile)
	if err != nil {
		t.Fatal(err)
	}
	return v, string(b)
}

// getCount fetches /count from the server as a client outside it, on a
// connection of its own that it closes.
func getCount(t *testing.T, addr, want string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/count")
	if err != nil {
		t.Fatalf("GET http://%s/count: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if string(b) != want {
		t.Fatalf("GET http://%s/count: %q, want %q", addr, b, want)
	}
}

// TestGoHTTPServerMPTCP: a Go net/http server, whose listener Go >= 1.24
// makes an MPTCP socket (IPPROTO_MPTCP), is dumped, killed and restored,
// and serves a client outside before and after (gohttp checks from
// inside that its listener kept its protocol). criu 4.2 refuses it
// ("Unsupported proto 262"); its result is logged.
func TestGoHTTPServerMPTCP(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v, addr := startGoHTTP(t)
	if !strings.Contains(v.LogTail(), "protocol 262") {
		t.Logf("the listener is not MPTCP here (no MPTCP in the kernel?): %s", v.LogTail())
	}
	getCount(t, addr, "count 1")
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.CheckImages(t, dir)
	testutil.RestoreDetached(t, dir, v)
	getCount(t, addr, "count 2")
	v.TermAndCheck(t)

	w, _ := startGoHTTP(t)
	t.Logf("criu 4.2 on gohttp: %s", testutil.CriuOutcome(t, w))
}

// startMPTCP starts mptcp.c with two free ports, with "conn" for its
// fallen-back connection.
func startMPTCP(t *testing.T, extra ...string) (*testutil.Victim, int, int) {
	t.Helper()
	p4, p6 := freePort(t, "127.0.0.1"), freePort(t, "::1")
	v := testutil.StartVictim(t, "mptcp", append([]string{strconv.Itoa(p4), strconv.Itoa(p6)}, extra...)...)
	v.WaitReady(t)
	return v, p4, p6
}

func askMPTCP(t *testing.T, p4, p6 int) {
	t.Helper()
	askTCP(t, "127.0.0.1", p4)
	askTCP(t, "::1", p6)
	askTCP(t, "127.0.0.1", p6) // dual stack
}

// TestMPTCPSockets: listening MPTCP sockets (IPv4, dual-stack IPv6), an
// unbound and a bound one are restored as MPTCP sockets with their
// address and options, and the listeners serve clients outside before
// and after (mptcp.c checks from inside). criu 4.2 refuses every MPTCP
// socket; its result is logged.
func TestMPTCPSockets(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v, p4, p6 := startMPTCP(t)
	askMPTCP(t, p4, p6)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.CheckImages(t, dir)
	testutil.RestoreDetached(t, dir, v)
	askMPTCP(t, p4, p6)
	v.TermAndCheck(t)

	w, _, _ := startMPTCP(t)
	t.Logf("criu 4.2 on mptcp: %s", testutil.CriuOutcome(t, w))
}

// TestMPTCPConnectionRefused: an MPTCP connection (here one that fell
// back to plain TCP) cannot be put in repair mode, so the dump refuses it
// even with --tcp-established, naming MPTCP, its ends and what to do
// (GODEBUG=multipathtcp=0 for Go), and leaves the victim running intact.
// criu 4.2 refuses it too; its result is logged.
func TestMPTCPConnectionRefused(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v, p4, p6 := startMPTCP(t, "conn")
	msg := testutil.DumpFail(t, v.Pid, t.TempDir(), "--tcp-established")
	testutil.AssertContains(t, msg, "MPTCP connection", "fallen back to plain TCP", "ESTABLISHED", "GODEBUG=multipathtcp=0", "127.0.0.1:", strconv.Itoa(v.Pid))
	askMPTCP(t, p4, p6)
	v.TermAndCheck(t)

	w, _, _ := startMPTCP(t, "conn")
	t.Logf("criu 4.2 on mptcp conn: %s", testutil.CriuOutcome(t, w, "--tcp-established"))
}

// TestGoHTTPServerMPTCPKeepAlive: a client outside holds a keep-alive
// connection to the Go server (plain TCP on its side) across the dump and
// restore (--tcp-established), and fetches on it before and after. The
// MPTCP listener accepted it as a plain TCP socket (the kernel gives a
// client without MPTCP a TCP socket at accept), so it goes through
// TCP_REPAIR as any. criu 4.2's result is logged (it refuses the
// listener).
func TestGoHTTPServerMPTCPKeepAlive(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v, addr := startGoHTTP(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	get := func(want string) {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("GET /count HTTP/1.1\r\nHost: stasis\r\n\r\n")); err != nil {
			t.Fatalf("keep-alive GET: %v", err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("keep-alive GET: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != want {
			t.Fatalf("keep-alive GET: %q, want %q", b, want)
		}
	}
	get("count 1")
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "--tcp-established")
	v.Reap(t)
	testutil.CheckImages(t, dir)
	testutil.RestoreDetached(t, dir, v, "--tcp-established")
	get("count 2")
	getCount(t, addr, "count 3")
	v.TermAndCheck(t)

	w, waddr := startGoHTTP(t)
	wc, err := net.Dial("tcp", waddr)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	t.Logf("criu 4.2 on gohttp with a keep-alive client: %s", testutil.CriuOutcome(t, w, "--tcp-established"))
}
