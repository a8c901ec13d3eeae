package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// streamer is a client that streams both ways at a slow pace until told
// to hurry: the migration happens while bytes flow.
type streamer struct {
	tc         *tcpClient
	rxAll      uint64 // what the server sends in all
	fast       atomic.Bool
	rerr, werr chan error
}

func (s *streamer) start() {
	s.rerr, s.werr = make(chan error, 1), make(chan error, 1)
	go func() {
		for !s.fast.Load() {
			if err := s.tc.read(s.tc.rx + 16<<10); err != nil {
				s.rerr <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		s.rerr <- s.tc.read(0)
	}()
	go func() {
		for s.tc.tx < s.tc.total {
			n := min(4096, s.tc.total-s.tc.tx)
			if s.fast.Load() {
				n = s.tc.total - s.tc.tx
			}
			if err := s.tc.write(n); err != nil {
				s.werr <- err
				return
			}
			if !s.fast.Load() {
				time.Sleep(20 * time.Millisecond)
			}
		}
		s.werr <- s.tc.c.CloseWrite()
	}()
}

func (s *streamer) finish(t *testing.T) {
	t.Helper()
	s.fast.Store(true)
	if err := <-s.werr; err != nil {
		t.Fatalf("client write after %d bytes: %v", s.tc.tx, err)
	}
	if err := <-s.rerr; err != nil {
		t.Fatalf("client read: %v", err)
	}
	if s.tc.rx != s.rxAll {
		t.Fatalf("client got %d bytes then EOF, want %d", s.tc.rx, s.rxAll)
	}
	// Written is not received: wait until the server's end has acked
	// every byte (the server reads what is queued at SIGTERM).
	rc, err := s.tc.c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var outq int
		var ierr error
		if err := rc.Control(func(fd uintptr) { outq, ierr = unix.IoctlGetInt(int(fd), unix.TIOCOUTQ) }); err != nil || ierr != nil {
			t.Fatalf("client send queue: %v %v", err, ierr)
		}
		if outq == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client: %d bytes sent but never acked by the server", outq)
		}
	}
}

// postDumpHook is an action script that, at the final dump's post-dump
// point, hands over to the test (which moves the address) and waits.
func postDumpHook(t *testing.T, moved func()) string {
	t.Helper()
	d := t.TempDir()
	in, out := filepath.Join(d, "frozen"), filepath.Join(d, "moved")
	for _, p := range []string{in, out} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	script := filepath.Join(d, "hook.sh")
	body := fmt.Sprintf("#!/bin/sh\n[ \"$CRTOOLS_SCRIPT_ACTION\" = post-dump ] || exit 0\necho frozen > %s\nread x < %s\n", in, out)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	go func() {
		if _, err := os.ReadFile(in); err != nil {
			return
		}
		moved()
		_ = os.WriteFile(out, []byte("ok\n"), 0)
	}()
	return script
}

// TestMigrateTCP (issue 16, test 3): `stasis migrate` moves a TCP server
// whose client streams both ways from host A to host B (network
// namespaces with their own image dirs): pre-copy rounds while it runs,
// the final dump under the network lock, its address moved at post-dump,
// the restore in B. The client sees every byte once and in order, no
// reset; the server checks its side; the downtime is printed.
func TestMigrateTCP(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	for _, flags := range [][]string{nil, {"--compress", "--encrypt"}, {"--lazy-pages"}} {
		t.Run(strings.Join(append([]string{"plain"}, flags...), ""), func(t *testing.T) {
			migrateTCP(t, flags, false)
		})
	}
}

// TestMigrateSSH: TestMigrateTCP's migration to host B over ssh, as to
// another machine: `--to ssh://root@B` with B's own sshd (its config and
// keys; stasis' ssh finds the key the way a user's ~/.ssh/config would
// give it), which runs `stasis migrate-receive --stdio` there.
func TestMigrateSSH(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	migrateTCP(t, nil, true)
}

// Hosts' own addresses, which do not move: A's ssh goes from adminA to
// B's sshd on adminB (from the server's address, which moves to B at
// post-dump, the connection would break). A subnet of their own: a
// second address of the server's subnet on A would go with it (the
// kernel removes the secondaries with the primary).
const adminA, adminB = "10.78.0.4", "10.78.0.3"

// sshTarget starts B's sshd and returns migrate's --to and the
// environment under which stasis' ssh logs in to it.
func sshTarget(t *testing.T, n *moveNet) (string, []string) {
	t.Helper()
	for _, h := range []struct {
		h          *netlink.Handle
		link, addr string
	}{{n.ha, "va", adminA}, {n.hb, "vb", adminB}} {
		// A host reaches its own address through its loopback.
		lo, err := h.h.LinkByName("lo")
		if err == nil {
			err = h.h.LinkSetUp(lo)
		}
		l, err2 := h.h.LinkByName(h.link)
		if err = errors.Join(err, err2); err == nil {
			err = h.h.AddrAdd(l, mustAddr(t, h.addr+"/24"))
		}
		if err != nil {
			t.Fatalf("address %s: %v", h.addr, err)
		}
	}
	srv := startSshd(t, n.b, adminB, 22)
	bin := t.TempDir()
	wrapper := fmt.Sprintf("#!/bin/sh\nexec %s -b %s -i %s -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \"$@\"\n",
		testutil.RequireTool(t, "ssh"), adminA, srv.userKey)
	if err := os.WriteFile(filepath.Join(bin, "ssh"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	return "ssh://root@" + adminB, []string{"PATH=" + bin + ":" + os.Getenv("PATH")}
}

// startStreaming makes hosts A, B and a client C, starts on A a TCP
// server that takes rx bytes and sends tx, and C's client streaming both
// ways with it for a while.
func startStreaming(t *testing.T, rx, tx int, after time.Duration) (*moveNet, *testutil.Victim, *streamer) {
	t.Helper()
	n := newMoveNet(t)
	port := 20000 + time.Now().Nanosecond()%20000
	var v *testutil.Victim
	in(t, n.a, func() {
		v = testutil.StartVictim(t, "tcpsrv", moveServer, strconv.Itoa(port), strconv.Itoa(rx), strconv.Itoa(tx),
			strconv.Itoa(rx), "0")
		v.WaitReady(t)
	})
	var tc *tcpClient
	in(t, n.c, func() { tc = dialTCPServer(t, moveServer, port) })
	tc.total = uint64(rx)
	s := &streamer{tc: tc, rxAll: uint64(tx)}
	s.start()
	time.Sleep(after)
	return n, v, s
}

func migrateTCP(t *testing.T, flags []string, viaSSH bool) {
	n, v, s := startStreaming(t, 4<<20, 16<<20, 200*time.Millisecond)

	src, dst := t.TempDir(), t.TempDir()
	pidfile := filepath.Join(dst, "restored.pid")
	hook := postDumpHook(t, func() { n.moveAddress(t) })
	args := []string{"migrate", "-t", strconv.Itoa(v.Pid), "--to", fmt.Sprintf("netns:/proc/%d/fd/%d", os.Getpid(), int(n.b)),
		"-D", src, "--target-dir", dst, "--pidfile", pidfile, "--action-script", hook, "-v4", "-o", "migrate.log"}
	var env []string
	if viaSSH {
		args[4], env = sshTarget(t, n)
		args = append(args, "--target-stasis", testutil.StasisBin(t))
	}
	if slices.Contains(flags, "--encrypt") {
		key := filepath.Join(t.TempDir(), "key")
		if err := os.WriteFile(key, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--key-file", key)
	}
	args = append(args, flags...)
	var r testutil.Result
	in(t, n.a, func() { r = runStasisEnv(t, env, args...) })
	if r.Code != 0 {
		b, _ := os.ReadFile(filepath.Join(src, "migrate.log"))
		t.Fatalf("%s\nlog:\n%s\n%s", r, tail(string(b), 4000), v.LogTail())
	}
	t.Logf("stasis migrate:\n%s", r.Stdout)
	if !strings.Contains(r.Stdout, "downtime") || !strings.Contains(r.Stdout, "pre-copy round 1") {
		t.Errorf("migrate printed no downtime or rounds:\n%s", r.Stdout)
	}
	// The dump killed it (reaped at once by its waiter); the pid runs
	// again on B already.
	if code := v.Wait(t, 10*time.Second); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("pid %d ended with %d at the final dump, want SIGKILL", v.Pid, code)
	}
	v.Adopt(t)
	if ns, err := netns.GetFromPid(v.Pid); err != nil || !ns.Equal(n.b) {
		t.Fatalf("migrated pid %d is not in host B's network namespace (%v)", v.Pid, err)
	} else {
		ns.Close()
	}
	if l := locksIn(t, n.a, v.Pid); len(l) != 0 {
		t.Errorf("locks left on A after the migration: %v", l)
	}
	if l := locksIn(t, n.b, v.Pid); len(l) != 0 {
		t.Errorf("locks left on B after the migration: %v", l)
	}
	s.finish(t)
	v.TermAndCheck(t)
}

// TestMigrateRollback: the restore on the target fails after the final
// dump killed the tree (its listening address was not moved there: no
// post-dump script), so migrate restores it here again from the final
// images, as it was; its client streams on without losing a byte, and
// no lock is left on either host.
func TestMigrateRollback(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	for _, flags := range [][]string{nil, {"--lazy-pages"}} {
		t.Run(strings.Join(append([]string{"plain"}, flags...), ""), func(t *testing.T) {
			migrateRollback(t, flags)
		})
	}
}

func migrateRollback(t *testing.T, flags []string) {
	n, v, s := startStreaming(t, 1<<20, 4<<20, 100*time.Millisecond)
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "target")
	args := append([]string{"migrate", "-t", strconv.Itoa(v.Pid), "--to", fmt.Sprintf("netns:/proc/%d/fd/%d", os.Getpid(), int(n.b)),
		"-D", src, "--target-dir", dst, "-v4", "-o", "migrate.log"}, flags...)
	var r testutil.Result
	in(t, n.a, func() { r = testutil.Run(t, 60*time.Second, args...) })
	if r.Code == 0 || !strings.Contains(r.Stderr, "restored here again") {
		b, _ := os.ReadFile(filepath.Join(src, "migrate.log"))
		t.Fatalf("migrate to a host without the address: want a failure and the tree restored here\n%s\nlog:\n%s", r, tail(string(b), 3000))
	}
	t.Logf("stasis migrate failed as it should:\n%s", r.Stderr)
	if code := v.Wait(t, 10*time.Second); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("pid %d ended with %d at the final dump, want SIGKILL", v.Pid, code)
	}
	v.Adopt(t)
	if ns, err := netns.GetFromPid(v.Pid); err != nil || !ns.Equal(n.a) {
		t.Fatalf("pid %d, restored again, is not in host A's network namespace (%v)", v.Pid, err)
	} else {
		ns.Close()
	}
	for _, h := range []netns.NsHandle{n.a, n.b} {
		if l := locksIn(t, h, v.Pid); len(l) != 0 {
			t.Errorf("locks left after the failed migration: %v", l)
		}
	}
	if ents, _ := os.ReadDir(dst); len(ents) != 0 {
		t.Errorf("the target kept what it got of a failed migration: %v", ents)
	}
	s.finish(t)
	v.TermAndCheck(t)
}
