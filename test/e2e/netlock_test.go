package e2e

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/netlock"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// locksOf lists the nftables lock tables of the tree whose root is pid:
// the persistent "CRIU-stasis-PID-RANDOM" (named as criu names its own,
// after the dump's run id) and those of a running stasis,
// "stasis-PID-by-SELF". Other tests may lock other pids meanwhile.
func locksOf(t *testing.T, nft *nftables.Conn, pid int) []string {
	t.Helper()
	all, err := netlock.Tables(nft)
	if err != nil {
		t.Fatal(err)
	}
	name := netlock.TableName(pid)
	var mine []string
	for _, n := range all {
		if n == name || strings.HasPrefix(n, name+"-by-") || isPersistentLock(n, pid) {
			mine = append(mine, n)
		}
	}
	return mine
}

func requireNoLock(t *testing.T, pid int, when string) {
	t.Helper()
	if l := locksOf(t, nil, pid); len(l) != 0 {
		t.Fatalf("lock tables %v left %s", l, when)
	}
}

// isPersistentLock tells the persistent lock of a dump of pid: the
// run id of a dump of stasis starts with the pid (netlock.RunID).
func isPersistentLock(name string, pid int) bool {
	return strings.HasPrefix(name, "CRIU-"+netlock.TableName(pid)+"-")
}

func requirePersistentLock(t *testing.T, pid int) {
	t.Helper()
	if l := locksOf(t, nil, pid); len(l) != 1 || !isPersistentLock(l[0], pid) {
		t.Fatalf("lock tables after the dump: %v, want one CRIU-%s-RANDOM", l, netlock.TableName(pid))
	}
}

// sendLocked sends bytes of the client's stream while the server is
// dumped and gone: the lock must drop them (no ACK, no reset), so that
// they wait in the client's queue for the restored server.
func sendLocked(t *testing.T, tc *tcpClient) {
	t.Helper()
	if err := tc.write(1000); err != nil {
		t.Fatalf("client write while locked: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	if n := tc.outq(t); n != 1000 {
		t.Fatalf("client has %d bytes unacknowledged while the server is dumped, want 1000 (the lock drops the segments)", n)
	}
	rc, err := tc.c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var soerr int
	rc.Control(func(fd uintptr) { soerr, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR) })
	if soerr != 0 {
		t.Fatalf("client socket error while locked: %v (a reset got through)", unix.Errno(soerr))
	}
}

// waitAcked waits until the restored server has acknowledged what the
// client sent under the lock: the bytes come again with the client's
// retransmission timer, backed off by then (up to seconds).
func waitAcked(t *testing.T, tc *tcpClient) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, "the server acknowledges every byte of the client", func() bool { return tc.outq(t) == 0 })
}

// TestNetworkLock: from the dump of a server with a connection to its
// restore, the connection's packets are dropped: bytes the client sends
// meanwhile get no ACK and no reset, and reach the restored server. The
// lock is gone once the restore has run.
func TestNetworkLock(t *testing.T) {
	testutil.RequireRoot(t)
	v, tc, _ := startTCPServer(t, "127.0.0.1")
	dir := t.TempDir()
	r := testutil.Dump(t, v.Pid, dir, "--tcp-established")
	v.Reap(t)
	testutil.CheckImages(t, dir)
	requirePersistentLock(t, v.Pid)
	sendLocked(t, tc)
	testutil.RestoreDetached(t, dir, v, "--tcp-established")
	requireNoLock(t, v.Pid, "by a restore")
	waitAcked(t, tc)
	finishStream(t, tc)
	v.TermAndCheck(t)
	if b, _ := os.ReadFile(r.Log); !strings.Contains(string(b), "connection locked") {
		t.Errorf("the dump's log does not say it locked the connection")
	}
}

// TestNetworkLockRestoreFails: a restore that fails removes the lock (it
// killed what it made: the peers should get resets now).
func TestNetworkLockRestoreFails(t *testing.T) {
	testutil.RequireRoot(t)
	v, _, _ := startTCPServer(t, "127.0.0.1")
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "--tcp-established")
	v.Reap(t)
	requirePersistentLock(t, v.Pid)
	testutil.RestoreFail(t, dir) // without --tcp-established
	requireNoLock(t, v.Pid, "by a failed restore")
}

// TestNetworkLockDumpFails: a dump that fails after the connection was
// locked (its images do not fit) unlocks it: the server goes on with
// every byte, and with -R the same.
func TestNetworkLockDumpFails(t *testing.T) {
	testutil.RequireRoot(t)
	t.Run("images-full", func(t *testing.T) {
		v, tc, _ := startTCPServer(t, "127.0.0.1")
		dir := t.TempDir()
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=8k"); err != nil {
			t.Fatalf("mount tmpfs on %s: %v", dir, err)
		}
		t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
		msg := testutil.DumpFail(t, v.Pid, dir, "--tcp-established")
		testutil.AssertContains(t, msg, "no space left")
		requireNoLock(t, v.Pid, "by a failed dump")
		finishStream(t, tc)
		v.TermAndCheck(t)
	})
	t.Run("leave-running", func(t *testing.T) {
		v, tc, _ := startTCPServer(t, "127.0.0.1")
		r := testutil.Dump(t, v.Pid, t.TempDir(), "--tcp-established", "-R")
		requireNoLock(t, v.Pid, "by a dump with -R")
		if b, _ := os.ReadFile(r.Log); !strings.Contains(string(b), "network unlocked") {
			t.Errorf("the dump's log does not say it unlocked the connection")
		}
		finishStream(t, tc)
		v.TermAndCheck(t)
	})
}

// TestNetworkLockOptions: --network-lock skip locks nothing, iptables is
// refused naming nftables, and the tree is left running.
//
// skip is for a caller that stops the connection's packets itself (a
// container runtime's own lock), as criu's is: the test locks the
// connection with a table of its own around the dump and the restore.
// Without it, the kernels' window probes and their answers go on while
// the dump reads the socket (the server's send queue is full, the
// client's window shut), and what the dump reads is not one state: one
// run in ten then stalled, each end dropping the other's segments.
func TestNetworkLockOptions(t *testing.T) {
	testutil.RequireRoot(t)
	v, tc, port := startTCPServer(t, "127.0.0.1")
	msg := testutil.DumpFail(t, v.Pid, t.TempDir(), "--tcp-established", "--network-lock", "iptables")
	testutil.AssertContains(t, msg, "iptables", "nftables")
	msg = testutil.DumpFail(t, v.Pid, t.TempDir(), "--tcp-established", "--network-lock", "none")
	testutil.AssertContains(t, msg, "--network-lock", "skip")
	own := netlock.New(netlock.Nftables, os.Getpid(), nil) // "stasis-TEST-by-TEST": not the victim's
	conn := netlock.Conn{Local: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)), Remote: tc.c.LocalAddr().(*net.TCPAddr).AddrPort()}
	if err := own.Add(conn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { own.Release() })
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "--tcp-established", "--network-lock", "skip")
	v.Reap(t)
	requireNoLock(t, v.Pid, "with --network-lock skip")
	testutil.RestoreDetached(t, dir, v, "--tcp-established", "--network-lock", "skip")
	requireNoLock(t, v.Pid, "by a restore with --network-lock skip")
	if err := own.Release(); err != nil {
		t.Fatal(err)
	}
	finishStream(t, tc)
	v.TermAndCheck(t)
}

// TestNetworkLockKilledDump: a stasis killed (SIGKILL) in the middle of
// a dump, with the connection locked, leaves no lock behind: the table
// belongs to its netlink socket. The dump is held in the middle by a
// FIFO where its pages image goes.
func TestNetworkLockKilledDump(t *testing.T) {
	testutil.RequireRoot(t)
	v, _, _ := startTCPServer(t, "127.0.0.1")
	dir := t.TempDir()
	for i := 1; i <= 8; i++ {
		if err := unix.Mkfifo(filepath.Join(dir, "pages-"+strconv.Itoa(i)+".img"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(testutil.StasisBin(t), "dump", "-t", strconv.Itoa(v.Pid), "-D", dir, "--tcp-established")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	own := netlock.TableName(v.Pid) + "-by-" + strconv.Itoa(cmd.Process.Pid)
	testutil.WaitFor(t, 10*time.Second, "the dump locks the connection", func() bool {
		return slices.Contains(locksOf(t, nil, v.Pid), own)
	})
	time.Sleep(200 * time.Millisecond) // into the pages, blocked on the FIFO
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	testutil.WaitFor(t, 2*time.Second, "the lock goes with the killed stasis", func() bool {
		return len(locksOf(t, nil, v.Pid)) == 0
	})
}
