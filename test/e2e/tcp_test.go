package e2e

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// The streams of tcpsrv.c: little-endian u32 sequence numbers, xor 0x5a
// for what the server sends.
func tcpPat(i uint64, salt byte) byte { return byte(uint32(i/4)>>(8*(i%4))) ^ salt }

const (
	tcpRxTotal = 1 << 20  // the test sends
	tcpTxTotal = 48 << 20 // the server sends: more than both buffers hold
	tcpPhaseA  = 256 << 10
	tcpPhaseB  = 16384 // sent while the server does not read: its receive queue at dump
	// The server reads again once it has written this much: more than
	// its send buffer and the client's receive buffer hold (4 + 6 MiB).
	tcpResumeTx = 24 << 20
)

// freePort returns a TCP (and UDP) port free on addr now.
//
// It is below the kernel's ephemeral range (ip_local_port_range): a port
// of that range, free between this call and the server's bind, or
// between the dump of the server and its restore, which needs it back,
// may meanwhile become the source port of a connect of a parallel test.
func freePort(t *testing.T, addr string) int {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			lo, _ = strconv.Atoi(f[0])
		}
	}
	const base = 10000
	for range 200 {
		if lo <= base+1000 {
			break // no room below the range: take one of it
		}
		port := base + rand.IntN(lo-base)
		hp := net.JoinHostPort(addr, strconv.Itoa(port))
		l, err := net.Listen("tcp", hp)
		if err != nil {
			continue
		}
		l.Close()
		if u, err := net.ListenPacket("udp", hp); err == nil {
			u.Close()
			return port
		}
	}
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// tcpClient is the test's end of a tcpsrv connection: it checks every
// byte the server sends and sends its own stream.
type tcpClient struct {
	c      *net.TCPConn
	rx, tx uint64
	closed bool // CloseWrite done
	total  uint64
}

func dialTCPServer(t *testing.T, addr string, port int) *tcpClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &tcpClient{c: c.(*net.TCPConn), total: tcpRxTotal}
}

// read reads and checks the server's stream until it has n bytes in all
// (or EOF, if n is 0).
func (tc *tcpClient) read(n uint64) error {
	buf := make([]byte, 1<<16)
	tc.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for n == 0 || tc.rx < n {
		want := len(buf)
		if n != 0 {
			want = int(min(uint64(want), n-tc.rx))
		}
		k, err := tc.c.Read(buf[:want])
		for i := 0; i < k; i++ {
			if buf[i] != tcpPat(tc.rx+uint64(i), 0x5a) {
				return fmt.Errorf("byte %d from the server is %#x, want %#x", tc.rx+uint64(i), buf[i], tcpPat(tc.rx+uint64(i), 0x5a))
			}
		}
		tc.rx += uint64(k)
		if errors.Is(err, io.EOF) && n == 0 {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read after %d bytes: %w", tc.rx, err)
		}
	}
	return nil
}

func (tc *tcpClient) write(n uint64) error {
	buf := make([]byte, n)
	for i := range buf {
		buf[i] = tcpPat(tc.tx+uint64(i), 0)
	}
	tc.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	k, err := tc.c.Write(buf)
	tc.tx += uint64(k)
	return err
}

// outq is what the client's kernel holds not yet acknowledged.
func (tc *tcpClient) outq(t *testing.T) int {
	rc, err := tc.c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
	if ierr != nil {
		t.Fatal(ierr)
	}
	return n
}

// state is the TCP state of the client's end (tcpi_state).
func (tc *tcpClient) state(t *testing.T) uint8 {
	rc, err := tc.c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var ierr error
	rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if ierr != nil {
		t.Fatal(ierr)
	}
	return info.State
}

// startTCPServer starts tcpsrv and streams both ways until phase A is
// done; then the client stops reading: the server's writes block, it
// stops reading, and the client's next 16 KiB stay in its receive queue.
// It returns once the connection is quiet (everything the client sent
// acknowledged): a dump must find data in both of the server's queues.
func startTCPServer(t *testing.T, addr string) (*testutil.Victim, *tcpClient, int) {
	return startTCPServerRx(t, addr, tcpRxTotal)
}

// startTCPServerRx is startTCPServer with the client sending rxTotal
// bytes in all: if that is all phases A and B send, the client shuts its
// side down too before it returns (the server is then in CLOSE_WAIT, its
// receive queue holding phase B's bytes and the FIN).
func startTCPServerRx(t *testing.T, addr string, rxTotal int) (*testutil.Victim, *tcpClient, int) {
	port := freePort(t, addr)
	v := testutil.StartVictim(t, "tcpsrv", addr, strconv.Itoa(port), strconv.Itoa(rxTotal), strconv.Itoa(tcpTxTotal),
		strconv.Itoa(tcpPhaseA), strconv.Itoa(tcpResumeTx))
	v.WaitReady(t)
	tc := dialTCPServer(t, addr, port)
	tc.total = uint64(rxTotal)
	werr := make(chan error, 1)
	go func() { werr <- tc.write(tcpPhaseA) }()
	if err := tc.read(tcpPhaseA); err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	// The server fills every buffer on its way and blocks: bytes it
	// wrote wait in its send queue, unsent (the client's window is shut).
	testutil.WaitFor(t, 10*time.Second, "the server's send queue to hold bytes it cannot send", func() bool {
		return serverNotsent(t, v.Pid) > 0
	})
	if err := tc.write(tcpPhaseB); err != nil {
		t.Fatal(err)
	}
	if tc.tx == uint64(rxTotal) {
		if err := tc.c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		tc.closed = true
	}
	testutil.WaitFor(t, 5*time.Second, "the server's kernel acknowledges the client's bytes", func() bool { return tc.outq(t) == 0 })
	time.Sleep(100 * time.Millisecond)
	return v, tc, port
}

// serverNotsent is tcpi_notsent_bytes of tcpsrv's connection: what it
// wrote that TCP has not sent yet. It looks at a copy of each of pid's
// sockets (pidfd_getfd) for the established one.
func serverNotsent(t *testing.T, pid int) uint32 {
	t.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err != nil || !strings.HasPrefix(l, "socket:") {
			continue
		}
		cp, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err != nil {
			continue
		}
		info, err := unix.GetsockoptTCPInfo(cp, unix.IPPROTO_TCP, unix.TCP_INFO)
		unix.Close(cp)
		if err == nil && info.State == unix.BPF_TCP_ESTABLISHED {
			return info.Notsent_bytes
		}
	}
	return 0
}

// finishStream resumes both streams to their ends: the client must get
// every byte of the server once and in order, then EOF, with no reset.
func finishStream(t *testing.T, tc *tcpClient) {
	t.Helper()
	rerr := make(chan error, 1)
	go func() { rerr <- tc.read(0) }()
	if !tc.closed {
		if err := tc.write(tc.total - tc.tx); err != nil {
			t.Fatalf("client write after %d bytes: %v", tc.tx, err)
		}
		if err := tc.c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-rerr; err != nil {
		t.Fatal(err)
	}
	if tc.rx != tcpTxTotal {
		t.Fatalf("client got %d bytes then EOF, want %d", tc.rx, tcpTxTotal)
	}
}

// TestTCPEstablished: a server with a connection streaming both ways is
// dumped with --tcp-established (killed) and restored: the client sees
// every byte once and in order and no reset, the data the server had
// queued (sent and unacknowledged, and never sent) and the client's bytes
// it had not read yet arrive, the listener shares its port with the
// connection again, and the server checks its side (tcpsrv.c).
func TestTCPEstablished(t *testing.T) {
	testutil.RequireRoot(t)
	for _, addr := range []string{"127.0.0.1", "::1"} {
		t.Run(addr, func(t *testing.T) {
			v, tc, port := startTCPServer(t, addr)
			dir := t.TempDir()
			testutil.Dump(t, v.Pid, dir, "--tcp-established")
			v.Reap(t)
			testutil.CheckImages(t, dir)
			checkStreamImage(t, dir)
			// The client's end is untouched by the dump and the kill: a
			// reset would show here.
			if n := tc.outq(t); n != 0 {
				t.Fatalf("client has %d bytes unacknowledged after the kill", n)
			}
			msg := testutil.RestoreFail(t, dir)
			testutil.AssertContains(t, msg, "--tcp-established", net.JoinHostPort(addr, strconv.Itoa(port)))
			testutil.RestoreDetached(t, dir, v, "--tcp-established")
			finishStream(t, tc)
			v.TermAndCheck(t)
		})
	}
}

// checkStreamImage: the dump found data in both queues of the server's
// connection, some of it never sent.
func checkStreamImage(t *testing.T, dir string) {
	t.Helper()
	d, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "tcp-stream-*.img"))
	if len(names) != 1 {
		t.Fatalf("tcp-stream images: %v, want one", names)
	}
	names[0] = filepath.Base(names[0])
	es, err := images.ReadAll(d, names[0], func() *tcp_stream.TcpStreamEntry { return &tcp_stream.TcpStreamEntry{} })
	if err != nil || len(es) != 1 {
		t.Fatalf("%s: %v entries, %v", names[0], len(es), err)
	}
	e := es[0]
	t.Logf("%s: inq %d, outq %d (unsent %d), mss %d, wscale %d/%d, options %#x", names[0], e.GetInqLen(), e.GetOutqLen(),
		e.GetUnsqLen(), e.GetMssClamp(), e.GetSndWscale(), e.GetRcvWscale(), e.GetOptMask())
	if e.GetInqLen() != tcpPhaseB {
		t.Errorf("receive queue %d bytes at dump, want the client's last %d", e.GetInqLen(), tcpPhaseB)
	}
	if e.GetOutqLen() == 0 || e.GetUnsqLen() == 0 {
		t.Errorf("send queue %d bytes (%d never sent) at dump: the test wants both", e.GetOutqLen(), e.GetUnsqLen())
	}
}

// TestTCPEstablishedRefused: without --tcp-established the dump fails
// naming the connection, the process and the flag, and leaves the server
// running with the connection working.
func TestTCPEstablishedRefused(t *testing.T) {
	testutil.RequireRoot(t)
	v, tc, port := startTCPServer(t, "127.0.0.1")
	msg := testutil.DumpFail(t, v.Pid, t.TempDir())
	local := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)).String()
	testutil.AssertContains(t, msg, "--tcp-established", local, tc.c.LocalAddr().String(), strconv.Itoa(v.Pid))
	finishStream(t, tc)
	v.TermAndCheck(t)
}

// TestTCPEstablishedLeaveRunning: a dump with -R leaves the connection out
// of repair mode: it goes on with every byte.
func TestTCPEstablishedLeaveRunning(t *testing.T) {
	testutil.RequireRoot(t)
	v, tc, _ := startTCPServer(t, "127.0.0.1")
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "--tcp-established", "-R")
	checkStreamImage(t, dir)
	finishStream(t, tc)
	v.TermAndCheck(t)
}

// TestTCPClose: restored with --tcp-close, the connection comes back
// closed, as criu's: the server reads EOF and its writes fail (EPIPE), the
// listener works; nothing hangs. tcpsrv.c reports what it lost.
func TestTCPClose(t *testing.T) {
	testutil.RequireRoot(t)
	v, _, port := startTCPServer(t, "127.0.0.1")
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "--tcp-established")
	v.Reap(t)
	testutil.RestoreDetached(t, dir, v, "--tcp-close")
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		t.Fatalf("the listener does not take connections after --tcp-close: %v", err)
	}
	c.Close()
	time.Sleep(200 * time.Millisecond)
	v.Signal(t, unix.SIGTERM)
	if code := v.Wait(t, 15*time.Second); code != 1 {
		t.Fatalf("tcpsrv exited %d, want 1 (its connection closed)\n%s", code, v.LogTail())
	}
	testutil.AssertContains(t, v.LogTail(), "eof 1", "Broken pipe")
}

// TestTCPHalfClosed: a connection the server has shut down for writing
// (FIN sent and acknowledged: FIN_WAIT2) is restored half-closed: the
// client goes on sending and the server reads every byte; the client
// sees EOF once and nothing after it.
func TestTCPHalfClosed(t *testing.T) {
	testutil.RequireRoot(t)
	port := freePort(t, "127.0.0.1")
	const tx = 65536
	v := testutil.StartVictim(t, "tcpsrv", "127.0.0.1", strconv.Itoa(port), strconv.Itoa(tcpRxTotal), strconv.Itoa(tx),
		strconv.Itoa(tcpRxTotal), "0")
	v.WaitReady(t)
	tc := dialTCPServer(t, "127.0.0.1", port)
	if err := tc.read(0); err != nil || tc.rx != tx {
		t.Fatalf("read %d bytes then %v, want %d then EOF", tc.rx, err, tx)
	}
	if err := tc.write(tcpPhaseA); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the server acknowledges the client's bytes", func() bool { return tc.outq(t) == 0 })
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "--tcp-established")
	v.Reap(t)
	testutil.CheckImages(t, dir)
	testutil.RestoreDetached(t, dir, v, "--tcp-established")
	if err := tc.write(tcpRxTotal - tc.tx); err != nil {
		t.Fatalf("client write after %d bytes: %v", tc.tx, err)
	}
	if err := tc.c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	tc.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := tc.c.Read(make([]byte, 16)); n != 0 || err != io.EOF {
		t.Fatalf("after EOF the client reads %d bytes, %v; want EOF again", n, err)
	}
	// The server checks at SIGTERM what it received: every byte and the
	// FIN must have reached it by then (acknowledged: the client's end,
	// which had its FIN already, is closed), however slowly it reads.
	testutil.WaitFor(t, 10*time.Second, "the server to acknowledge the client's bytes and FIN", func() bool {
		return tc.state(t) == unix.BPF_TCP_CLOSE
	})
	v.TermAndCheck(t)
}

// TestTCPPeerClosed: a connection the client has shut down (the server in
// CLOSE_WAIT, the client's last bytes and its FIN not read yet) comes back
// with both: the server reads every byte then EOF, and goes on writing
// its stream to the client, which gets all of it.
func TestTCPPeerClosed(t *testing.T) {
	testutil.RequireRoot(t)
	for _, addr := range []string{"127.0.0.1", "::1"} {
		t.Run(addr, func(t *testing.T) {
			v, tc, _ := startTCPServerRx(t, addr, tcpPhaseA+tcpPhaseB)
			dir := t.TempDir()
			testutil.Dump(t, v.Pid, dir, "--tcp-established")
			v.Reap(t)
			testutil.CheckImages(t, dir)
			checkStreamImage(t, dir)
			if st := connState(t, dir); st != 8 {
				t.Fatalf("connection dumped in TCP state %d, want 8 (CLOSE_WAIT)", st)
			}
			testutil.RestoreDetached(t, dir, v, "--tcp-established")
			finishStream(t, tc)
			v.TermAndCheck(t)
		})
	}
}

// connState is the TCP state of the one connection of a dump.
func connState(t *testing.T, dir string) uint32 {
	t.Helper()
	fes := testutil.ReadImage(t, dir, "files.img", func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} })
	for _, fe := range fes {
		if isk := fe.GetIsk(); isk != nil && isk.GetDstPort() != 0 {
			return isk.GetState()
		}
	}
	t.Fatal("no TCP connection in files.img")
	return 0
}
