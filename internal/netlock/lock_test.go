package netlock

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil/require"
)

// inNetns moves the calling goroutine, for the rest of its life, to a
// new network namespace with lo up: the thread stays locked, so the
// runtime discards it when the test ends.
func inNetns(t *testing.T) {
	t.Helper()
	require.RootFor(t, "creates network namespaces and nftables tables")
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare(CLONE_NEWNET): %v", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_UP | unix.IFF_LOOPBACK | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatalf("bring lo up: %v", err)
	}
}

// pair is a TCP connection of two sockets of the test.
type pair struct {
	client, server *net.TCPConn
}

func newPair(t *testing.T, addr string) pair {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	p := pair{c.(*net.TCPConn), s.(*net.TCPConn)}
	t.Cleanup(func() { p.client.Close(); p.server.Close() })
	return p
}

// conn is the connection as the server's side (the dumped tree) sees it.
func (p pair) conn() Conn {
	return Conn{Local: p.server.LocalAddr().(*net.TCPAddr).AddrPort(), Remote: p.server.RemoteAddr().(*net.TCPAddr).AddrPort()}
}

func outq(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatalf("SIOCOUTQ: %v", ierr)
	}
	return n
}

// blocked checks that bytes sent both ways while the lock holds arrive
// nowhere and stay unacknowledged in the senders' queues.
func (p pair) blocked(t *testing.T) {
	t.Helper()
	if _, err := p.client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.server.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*net.TCPConn{p.server, p.client} {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		var b [16]byte
		if n, err := c.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read through the lock: %q, %v; want nothing", b[:n], err)
		}
	}
	if q := outq(t, p.client); q != 4 {
		t.Errorf("client's unacknowledged bytes: %d, want 4 (the lock drops the segments and the ACKs)", q)
	}
	if q := outq(t, p.server); q != 4 {
		t.Errorf("server's unacknowledged bytes: %d, want 4", q)
	}
}

// flows checks that the bytes sent under the lock arrive once it is
// gone (retransmitted: the connection was not reset) and that the
// connection goes on.
func (p pair) flows(t *testing.T) {
	t.Helper()
	for _, x := range []struct {
		c    *net.TCPConn
		want string
	}{{p.server, "ping"}, {p.client, "pong"}} {
		x.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 4)
		if _, err := ioReadFull(x.c, b); err != nil || string(b) != x.want {
			t.Fatalf("after the unlock: read %q, %v; want %q", b, err, x.want)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for outq(t, p.client) != 0 || outq(t, p.server) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("bytes still unacknowledged 5 s after the unlock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := p.client.Write([]byte("more")); err != nil {
		t.Fatalf("write after the unlock: %v", err)
	}
	b := make([]byte, 4)
	if _, err := ioReadFull(p.server, b); err != nil || string(b) != "more" {
		t.Fatalf("read after the unlock: %q, %v", b, err)
	}
}

func ioReadFull(c *net.TCPConn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func tables(t *testing.T) []string {
	t.Helper()
	names, err := Tables(nil)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestLockDropsAndReleases(t *testing.T) {
	for _, addr := range []string{"127.0.0.1", "::1"} {
		t.Run(addr, func(t *testing.T) {
			inNetns(t)
			p := newPair(t, addr)
			other := newPair(t, addr)
			l := New(Nftables, 4242, nil)
			if got := tables(t); len(got) != 0 {
				t.Fatalf("tables before the first connection: %v", got)
			}
			if err := l.Add(p.conn()); err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("stasis-4242-by-%d", os.Getpid())
			if got := tables(t); !slices.Equal(got, []string{want}) {
				t.Fatalf("tables: %v, want [%s]", got, want)
			}
			p.blocked(t)
			// Another connection between the same hosts is not touched.
			if _, err := other.client.Write([]byte("free")); err != nil {
				t.Fatal(err)
			}
			other.server.SetReadDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 4)
			if _, err := ioReadFull(other.server, b); err != nil {
				t.Fatalf("a connection not locked: %v", err)
			}
			if err := l.Release(); err != nil {
				t.Fatal(err)
			}
			if got := tables(t); len(got) != 0 {
				t.Fatalf("tables after Release: %v", got)
			}
			p.flows(t)
		})
	}
}

// TestLockPersist: the persistent lock takes the place of the owned one
// with no gap, replaces a stale one, and Unlock removes it.
func TestLockPersist(t *testing.T) {
	inNetns(t)
	v4, v6 := newPair(t, "127.0.0.1"), newPair(t, "::1")
	stale := New(Nftables, 7, nil)
	if err := stale.Add(Conn{Local: v4.conn().Local, Remote: v4.conn().Local}); err != nil {
		t.Fatal(err)
	}
	if err := stale.Persist(); err != nil {
		t.Fatal(err)
	}
	l := New(Nftables, 7, nil)
	for _, p := range []pair{v4, v6} {
		if err := l.Add(p.conn()); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Persist(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Fatalf("Release after Persist: %v", err)
	}
	if got := tables(t); !slices.Equal(got, []string{"stasis-7"}) {
		t.Fatalf("tables after Persist: %v, want [stasis-7]", got)
	}
	if err := l.Add(v4.conn()); err == nil {
		t.Errorf("Add after Persist: no error")
	}
	v4.blocked(t)
	v6.blocked(t)
	if err := Unlock(7); err != nil {
		t.Fatal(err)
	}
	if err := Unlock(7); err != nil {
		t.Fatalf("Unlock without a lock: %v", err)
	}
	if got := tables(t); len(got) != 0 {
		t.Fatalf("tables after Unlock: %v", got)
	}
	v4.flows(t)
	v6.flows(t)
}

func TestSkipLocksNothing(t *testing.T) {
	inNetns(t)
	var l *Lock = New(Skip, 1, nil)
	p := newPair(t, "127.0.0.1")
	if err := l.Add(p.conn()); err != nil {
		t.Fatal(err)
	}
	if err := l.Persist(); err != nil {
		t.Fatal(err)
	}
	if got := tables(t); len(got) != 0 {
		t.Fatalf("tables: %v", got)
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": Nftables, "nftables": Nftables, "skip": Skip} {
		if m, err := ParseMode(in); err != nil || m != want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, m, err, want)
		}
	}
	for _, in := range []string{"iptables", "nft", "none"} {
		if _, err := ParseMode(in); err == nil {
			t.Errorf("ParseMode(%q): no error", in)
		}
	}
	if _, err := ParseMode("iptables"); err == nil || !strings.Contains(err.Error(), "nftables") {
		t.Errorf("iptables: %v, want it to say stasis uses nftables", err)
	}
}

// helperEnv makes the test binary a process that locks a connection in
// a network namespace of its own and waits to be killed.
const helperEnv = "NETLOCK_TEST_HELPER"

func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		return // only the re-exec of TestKilledStasisLeavesNoLock does anything
	}
	inNetns(t)
	l := New(Nftables, 99, nil)
	p := newPair(t, "127.0.0.1")
	if err := l.Add(p.conn()); err != nil {
		t.Fatal(err)
	}
	if mode == "persist" {
		if err := l.Persist(); err != nil {
			t.Fatal(err)
		}
	}
	// The namespace is this thread's (unshare acts on the calling thread):
	// the test looks at the tables through it.
	fmt.Println("locked", unix.Gettid())
	time.Sleep(time.Minute)
}

// TestKilledStasisLeavesNoLock: a stasis killed (SIGKILL) while it holds
// the lock of a dump leaves no table behind; a persistent lock stays.
func TestKilledStasisLeavesNoLock(t *testing.T) {
	require.RootFor(t, "creates nftables tables")
	for mode, want := range map[string][]string{"owned": nil, "persist": {"stasis-99"}} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
			cmd.Env = append(os.Environ(), helperEnv+"="+mode)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			sc := bufio.NewScanner(out)
			tid := ""
			for sc.Scan() {
				if rest, ok := strings.CutPrefix(sc.Text(), "locked "); ok {
					tid = rest
					break
				}
			}
			if sc.Err() != nil || tid == "" {
				t.Fatalf("the helper did not say it locked: %v", sc.Err())
			}
			ns, err := os.Open("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/task/" + tid + "/ns/net")
			if err != nil {
				t.Fatal(err)
			}
			defer ns.Close()
			nft, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
			if err != nil {
				t.Fatal(err)
			}
			before, err := Tables(nft)
			if err != nil || len(before) != 1 {
				t.Fatalf("tables of the helper: %v, %v; want one", before, err)
			}
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			var after []string
			for range 100 {
				if after, err = Tables(nft); err != nil {
					t.Fatal(err)
				}
				if slices.Equal(after, want) {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Fatalf("tables after SIGKILL: %v, want %v (before: %v)", after, want, before)
		})
	}
}
