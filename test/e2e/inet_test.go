package e2e

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// inetPorts are the ports of inet.c: listeners L4, L6, LD, LF, then UDP
// U4, U6, UD.
type inetPorts [7]int

func startInet(t *testing.T) (*testutil.Victim, inetPorts) {
	t.Helper()
	var p inetPorts
	args := []string{}
	for i := range p {
		addr := "127.0.0.1"
		if i == 1 || i == 5 {
			addr = "::1"
		}
		p[i] = freePort(t, addr)
		args = append(args, strconv.Itoa(p[i]))
	}
	v := testutil.StartVictim(t, "inet", args...)
	v.WaitReady(t)
	return v, p
}

// askTCP connects to a listener of inet.c and wants its reply.
func askTCP(t *testing.T, addr string, port int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		t.Fatalf("connect to %s:%d: %v", addr, port, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b := []byte{'x'}
	if _, err := c.Write(b); err != nil {
		t.Fatalf("%s:%d: %v", addr, port, err)
	}
	if _, err := c.Read(b); err != nil || b[0] != 'y' {
		t.Fatalf("%s:%d: reply %q, %v", addr, port, b, err)
	}
}

// askUDP sends a datagram to a UDP socket of inet.c and wants it back.
func askUDP(t *testing.T, network, addr string, port int) {
	t.Helper()
	c, err := net.Dial(network, net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping " + addr)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, err := c.Read(b)
	if err != nil || string(b[:n]) != "ping "+addr {
		t.Fatalf("udp %s:%d: echo %q, %v", addr, port, b[:n], err)
	}
}

// askAll uses every socket of inet.c from outside.
func askAll(t *testing.T, p inetPorts) {
	t.Helper()
	askTCP(t, "127.0.0.1", p[0])
	askTCP(t, "::1", p[1])
	askTCP(t, "::1", p[2])
	askTCP(t, "127.0.0.1", p[2]) // dual stack
	askUDP(t, "udp4", "127.0.0.1", p[4])
	askUDP(t, "udp6", "::1", p[5])
	askUDP(t, "udp6", "::1", p[6])
	askUDP(t, "udp4", "127.0.0.1", p[6])
	// IPv6-only stays so: nothing listens for IPv4 on L6's port, nothing
	// receives IPv4 datagrams on U6's. (The ports were free on ::1 only:
	// an IPv4 socket of another test may have the same number, and answer
	// for it; it shows in the IPv4 tables, where the victim's, being IPv6
	// sockets, never do.)
	if ipv4Bound(t, "tcp", p[1]) {
		t.Logf("an IPv4 listener of another test has port %d: the IPv6-only check of L6 is left out", p[1])
	} else if c, err := net.DialTimeout("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p[1])), time.Second); err == nil {
		c.Close()
		t.Errorf("127.0.0.1:%d accepted a connection: the IPv6-only listener became dual stack", p[1])
	}
	if ipv4Bound(t, "udp", p[5]) {
		t.Logf("an IPv4 UDP socket of another test has port %d: the IPv6-only check of U6 is left out", p[5])
	} else if c, err := net.Dial("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p[5]))); err == nil {
		c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		c.Write([]byte("v4"))
		if n, err := c.Read(make([]byte, 8)); err == nil {
			t.Errorf("127.0.0.1:%d echoed %d bytes: the IPv6-only UDP socket became dual stack", p[5], n)
		}
		c.Close()
	}
}

// ipv4Bound reports whether /proc/net/tcp (a listener) or /proc/net/udp
// (any socket) of the test's network namespace lists one on port.
func ipv4Bound(t *testing.T, proto string, port int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/net/" + proto)
	if err != nil {
		t.Fatal(err)
	}
	suffix := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1], suffix) && (proto == "udp" || f[3] == "0A") {
			return true
		}
	}
	return false
}

// TestInetSockets: listening TCP sockets (IPv4, IPv6-only, dual stack)
// keep their address, backlog and options and accept clients after the
// restore; UDP sockets keep their binding and their connected peer, v6only
// or dual stack (inet.c checks from inside; the test uses each from
// outside).
func TestInetSockets(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v, p := startInet(t)
	askAll(t, p)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.CheckImages(t, dir)
	testutil.RestoreDetached(t, dir, v)
	askAll(t, p)
	v.TermAndCheck(t)
}

// TestTCPInFlight: a connection in a listener's accept queue makes the
// dump fail, naming the listener and --skip-in-flight, the process left
// running; with --skip-in-flight it is dropped and the listener restored.
func TestTCPInFlight(t *testing.T) {
	testutil.RequireRoot(t)
	v, p := startInet(t)
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p[3])))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := testutil.DumpFail(t, v.Pid, t.TempDir())
	testutil.AssertContains(t, msg, "--skip-in-flight", "127.0.0.1:"+strconv.Itoa(p[3]), strconv.Itoa(v.Pid), "not yet accepted")
	askAll(t, p)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "--skip-in-flight")
	v.Reap(t)
	testutil.RestoreDetached(t, dir, v)
	// The listener has its backlog again: a client gets in.
	c2, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p[3])), 5*time.Second)
	if err != nil {
		t.Fatalf("connect to the restored listener: %v", err)
	}
	c2.Close()
	v.TermAndCheck(t)
}

// TestInetRestorePortTaken: a port taken by another socket between dump
// and restore fails the restore with the address and the reason, and
// leaves nothing behind; once it is free the restore works.
func TestInetRestorePortTaken(t *testing.T) {
	testutil.RequireRoot(t)
	v, p := startInet(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p[0])))
	if err != nil {
		t.Fatal(err)
	}
	msg := testutil.RestoreFail(t, dir)
	testutil.AssertContains(t, msg, "127.0.0.1:"+strconv.Itoa(p[0]), "address already in use")
	testutil.AssertNoTask(t, v.Pid)
	l.Close()
	testutil.RestoreDetached(t, dir, v)
	askAll(t, p)
	v.TermAndCheck(t)
}

// TestNetlinkSockets: NETLINK_ROUTE sockets keep their port id, groups,
// options and flags, an unbound one stays unbound, and both still talk to
// the kernel (netlink.c).
func TestNetlinkSockets(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "netlink")
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.CheckImages(t, dir)
	testutil.RestoreDetached(t, dir, v)
	v.TermAndCheck(t)
}
