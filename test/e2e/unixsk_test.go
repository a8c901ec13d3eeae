package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	sk_packet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestUnixSockets: stream, datagram and seqpacket socketpairs with
// messages queued both ways, a listener bound to a path with two
// connections waiting to be accepted, an abstract datagram receiver with
// messages from a connected sender, a stream end shut down for writing
// and a pair whose ends a parent and its child hold all come back: the
// victim reads every message with its boundaries and in order, accepts
// both connections and talks over them, and checks options, flags, names
// and the socket file's mode (unixsk.c).
func TestUnixSockets(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	sockDir := t.TempDir()
	v := testutil.StartVictim(t, "unixsk", "all", sockDir)
	v.WaitReady(t)
	ts := testutil.TrackTree(t, v.Pid)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.ReapTasks(t, testutil.Pids(ts[1:]))
	testutil.CheckImages(t, dir)

	files := testutil.ReadImage(t, dir, "files.img", func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} })
	states := map[uint32]int{}
	for _, f := range files {
		if u := f.GetUsk(); u != nil {
			states[u.GetState()]++
		}
	}
	// 15 sockets: one listener, 14 connected (datagram ones too).
	if states[10] != 1 || states[1] != 14 || len(states) != 2 {
		t.Errorf("files.img: unix sockets by state %v, want 1 listening (10) and 14 established (1)", states)
	}
	pkts := testutil.ReadImage(t, dir, "sk-queues.img", func() *sk_packet.SkPacketEntry { return &sk_packet.SkPacketEntry{} })
	if len(pkts) < 16 {
		t.Errorf("sk-queues.img: %d messages, want at least 16", len(pkts))
	}
	// The dead victim left its socket file: the restore replaces it.
	if _, err := os.Lstat(filepath.Join(sockDir, "listen.sock")); err != nil {
		t.Errorf("stale socket file: %v", err)
	}
	testutil.RestoreDetached(t, dir, v)
	v.TermAndCheck(t)
}

// TestUnixSocketsLossDetected: a message taken out of a queue behind the
// victim's back must make it fail, or TestUnixSockets proves nothing.
func TestUnixSocketsLossDetected(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "unixsk", "all", t.TempDir())
	v.WaitReady(t)
	testutil.TrackTree(t, v.Pid)
	pidfd, err := unix.PidfdOpen(v.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	sk, err := unix.PidfdGetfd(pidfd, 13, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := unix.Read(sk, buf); err != nil || string(buf[:n]) != "d-a1" {
		t.Fatalf("read %q, %v from fd 13, want d-a1", buf[:max(n, 0)], err)
	}
	unix.Close(sk)
	v.Signal(t, unix.SIGTERM)
	if code := v.Wait(t, 10*time.Second); code != 1 {
		t.Fatalf("victim exit %d after losing a message, want 1\n%s", code, v.LogTail())
	}
	testutil.AssertContains(t, v.LogTail(), "FAIL: fd 13")
}

// TestUnixFdkind: the fdkind victim's socketpair (the bad-input case of
// old) is dumped and restored with its queued bytes.
func TestUnixFdkind(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "fdkind", "unix")
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.RestoreDetached(t, dir, v)
	v.TermAndCheck(t)
}

// outsidePeer makes a socket of the test at PATH in a temp dir: a stream
// listener or a bound datagram socket; the victim connects to it.
func outsidePeer(t *testing.T, typ int) (string, int) {
	path := filepath.Join(t.TempDir(), "out.sock")
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if typ == unix.SOCK_STREAM {
		if err := unix.Listen(fd, 4); err != nil {
			t.Fatal(err)
		}
	}
	return path, fd
}

// recvWithin reads one message or some bytes from fd within 5 s.
func recvWithin(t *testing.T, fd int) string {
	t.Helper()
	tv := unix.Timeval{Sec: 5}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 256)
	n, err := unix.Read(fd, buf)
	if err != nil {
		t.Fatalf("read from the test's socket: %v", err)
	}
	return string(buf[:n])
}

func sockIno(t *testing.T, pid, fd int) string {
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")
}

// TestUnixStreamPeerOutside: a stream socket connected to the test's
// listener is refused, with or without -x, naming both ends and the way
// out, and the victim goes on unharmed. With --external unix[INO] it is
// dumped, and restored on a socket the test hands over with --inherit-fd.
func TestUnixStreamPeerOutside(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	path, lfd := outsidePeer(t, unix.SOCK_STREAM)
	v := testutil.StartVictim(t, "unixsk", "outside-stream", path)
	v.WaitReady(t)
	cfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(cfd)
	ino := sockIno(t, v.Pid, 30)
	for _, extra := range [][]string{nil, {"-x"}} {
		msg := testutil.DumpFail(t, v.Pid, t.TempDir(), extra...)
		assertNamesPID(t, msg, v.Pid)
		testutil.AssertContains(t, msg, "fd 30", "socket:["+ino+"]", "stream", "outside the dumped tree",
			fmt.Sprintf("held by fd %d of pid %d", cfd, os.Getpid()), "--external unix["+ino+"]", "--inherit-fd fd[N]:socket:["+ino+"]")
		testutil.AssertRunning(t, v.Pid)
	}
	if got := recvWithin(t, cfd); got != "before" {
		t.Fatalf("read %q, want before", got)
	}

	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "--external", "unix["+ino+"]")
	v.Reap(t)
	testutil.CheckImages(t, dir)
	msg := testutil.RestoreFail(t, dir)
	testutil.AssertContains(t, msg, "socket:["+ino+"]", "--inherit-fd fd[N]:socket:["+ino+"]")

	// The restored victim gets a new connection to the listener.
	nfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(nfd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	sfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sfd)
	f := os.NewFile(uintptr(nfd), "inherited")
	defer f.Close()
	rs := exec.Command(testutil.StasisBin(t), "restore", "-D", dir, "-d", "--inherit-fd", "fd[3]:socket:["+ino+"]")
	rs.ExtraFiles = []*os.File{f}
	if out, err := rs.CombinedOutput(); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	testutil.Track(t, []int{v.Pid})
	if err := unix.Kill(v.Pid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan unix.WaitStatus, 1)
	go func() {
		var ws unix.WaitStatus
		unix.Wait4(v.Pid, &ws, 0, nil)
		exited <- ws
	}()
	select {
	case ws := <-exited:
		if !ws.Exited() || ws.ExitStatus() != 0 {
			t.Fatalf("restored victim: status %#x\n%s", ws, v.LogTail())
		}
	case <-time.After(testutil.MinWait):
		t.Fatalf("restored victim did not exit on SIGTERM\n%s", v.LogTail())
	}
	if got := recvWithin(t, sfd); got != "after" {
		t.Fatalf("read %q on the inherited connection, want after", got)
	}
}

// TestUnixDgramPeerOutside: a datagram socket connected to the test's
// bound socket is refused without -x (the message says so) and dumped
// with it; the restore needs -x too and connects it to that name again:
// what the victim sends after the restore reaches the test.
func TestUnixDgramPeerOutside(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	path, fd := outsidePeer(t, unix.SOCK_DGRAM)
	v := testutil.StartVictim(t, "unixsk", "outside-dgram", path)
	v.WaitReady(t)
	if got := recvWithin(t, fd); got != "before" {
		t.Fatalf("read %q, want before", got)
	}
	ino := sockIno(t, v.Pid, 30)
	msg := testutil.DumpFail(t, v.Pid, t.TempDir())
	assertNamesPID(t, msg, v.Pid)
	testutil.AssertContains(t, msg, "fd 30", "socket:["+ino+"]", "datagram", "bound to "+path, "-x/--ext-unix-sk")
	testutil.AssertRunning(t, v.Pid)

	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "-x")
	v.Reap(t)
	testutil.CheckImages(t, dir)
	msg = testutil.RestoreFail(t, dir)
	testutil.AssertContains(t, msg, "socket:["+ino+"]", "-x/--ext-unix-sk")
	testutil.RestoreDetached(t, dir, v, "-x")
	v.TermAndCheck(t)
	if got := recvWithin(t, fd); got != "after" {
		t.Fatalf("read %q, want after", got)
	}
}

// TestUnixSCMRights: files in flight in unix socket queues come back with
// their messages (unixsk.c mode scm): on a stream, after the bytes before
// them, a regular file the victim also holds (one open file description:
// a write through one moves the other's offset) and the write end of a
// pipe it reads (with what was buffered); on a seqpacket pair, a memfd and
// an eventfd, then a message with none, then a connected socket and the
// receiving socket itself. sk-queues.img names them by file id.
func TestUnixSCMRights(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "unixsk", "scm", t.TempDir())
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.CheckImages(t, dir)

	files := testutil.ReadImage(t, dir, "files.img", func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} })
	types := map[uint32]fdinfo.FdTypes{}
	for _, f := range files {
		types[f.GetId()] = f.GetType()
	}
	pkts := testutil.ReadImage(t, dir, "sk-queues.img", func() *sk_packet.SkPacketEntry { return &sk_packet.SkPacketEntry{} })
	var got []string
	for _, p := range pkts {
		s := fmt.Sprint(p.GetLength())
		for _, scm := range p.GetScm() {
			if scm.GetType() != 1 {
				t.Errorf("sk-queues.img: scm entry of type %d, want SCM_RIGHTS (1)", scm.GetType())
			}
			for _, id := range scm.GetRights() {
				s += "," + types[id].String()
			}
		}
		got = append(got, s)
	}
	// In queue order: 11 ("before", "fds!", "after"), 13 ("m1", "m2",
	// then "to-15" queued on fd 15, which "m3" carries, and "m3").
	want := "6 4,REG,PIPE 5 2,MEMFD,EVENTFD 2 5 2,UNIXSK,UNIXSK"
	if s := strings.Join(got, " "); s != want {
		t.Errorf("sk-queues.img: messages %q, want %q", s, want)
	}
	testutil.RestoreDetached(t, dir, v)
	v.TermAndCheck(t)
}

// TestUnixSCMRightsRefused: a file stasis cannot dump in flight (an
// inotify) fails the dump with the socket, the pid and what is in flight;
// the victim still receives the message and its file.
func TestUnixSCMRightsRefused(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "unixsk", "scm-inotify", "-")
	v.WaitReady(t)
	msg := testutil.DumpFail(t, v.Pid, t.TempDir())
	assertNamesPID(t, msg, v.Pid)
	testutil.AssertContains(t, msg, "fd 11", "inotify", "in flight", "SCM_RIGHTS", "not supported")
	testutil.AssertRunning(t, v.Pid)
	v.TermAndCheck(t)
}

// TestUnixSCMRightsCorrupt: an scm entry naming a file not in files.img,
// or of a type other than SCM_RIGHTS, fails the restore with the image
// and the offset, and leaves nothing behind.
func TestUnixSCMRightsCorrupt(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "unixsk", "scm", t.TempDir())
	v.WaitReady(t)
	good := t.TempDir()
	testutil.Dump(t, v.Pid, good)
	v.Reap(t)
	for name, c := range map[string]struct {
		edit func(*sk_packet.ScmEntry)
		want []string
	}{
		"unknown-file": {func(e *sk_packet.ScmEntry) { e.Rights[1] = 9999 }, []string{"file id 9999", "not in files.img"}},
		"credentials":  {func(e *sk_packet.ScmEntry) { e.Type = proto.Uint32(2) }, []string{"type 2", "not supported"}},
	} {
		t.Run(name, func(t *testing.T) {
			dir := imageDirNoChecksums(t, good)
			d, err := images.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			rd, err := d.NewReader("sk-queues.img")
			if err != nil {
				t.Fatal(err)
			}
			type pkt struct {
				e    *sk_packet.SkPacketEntry
				data []byte
			}
			var pkts []pkt
			for {
				e := &sk_packet.SkPacketEntry{}
				if err := rd.Next(e); err != nil {
					break
				}
				data, err := rd.ReadExtra()
				if err != nil {
					t.Fatal(err)
				}
				pkts = append(pkts, pkt{e, data})
			}
			rd.Close()
			w, err := d.NewWriter("sk-queues.img")
			if err != nil {
				t.Fatal(err)
			}
			edited := false
			for _, p := range pkts {
				if len(p.e.GetScm()) > 0 && !edited {
					c.edit(p.e.Scm[0])
					edited = true
				}
				w.Write(p.e)
				w.WriteExtra(p.data)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			msg := testutil.RestoreFail(t, dir)
			testutil.AssertContains(t, msg, append([]string{"sk-queues.img", "offset"}, c.want...)...)
		})
	}
	testutil.RestoreDetached(t, good, v)
	v.TermAndCheck(t)
}

// TestUnixCorruptQueue: an sk-queues.img entry for a socket not in the
// dump, or cut short, fails the restore with the file and the offset,
// and leaves nothing behind.
func TestUnixCorruptQueue(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "fdkind", "unix")
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	good := dir
	dir = imageDirNoChecksums(t, good)
	q := filepath.Join(dir, "sk-queues.img")
	orig, err := os.ReadFile(q)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("unknown-socket", func(t *testing.T) {
		d, err := images.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		w, err := d.NewWriter("sk-queues.img")
		if err != nil {
			t.Fatal(err)
		}
		w.Write(&sk_packet.SkPacketEntry{IdFor: proto.Uint32(9999), Length: proto.Uint32(2)})
		w.WriteExtra([]byte("hi"))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		msg := testutil.RestoreFail(t, dir)
		testutil.AssertContains(t, msg, "sk-queues.img", "offset", "file id 9999")
	})
	t.Run("truncated", func(t *testing.T) {
		if err := os.WriteFile(q, orig[:len(orig)-2], 0o644); err != nil {
			t.Fatal(err)
		}
		msg := testutil.RestoreFail(t, dir)
		testutil.AssertContains(t, msg, "sk-queues.img", "offset")
	})
	testutil.RestoreDetached(t, good, v)
	v.TermAndCheck(t)
}

// TestUnixRelativeName: unix sockets bound by a relative name, two of
// them with the name's NUL counted in the address length (the kernel
// keeps "rel.sock\x00"), are restored bound by the same relative name in
// the same directory (unixrel.c checks getsockname, the files and a
// client by the absolute path). criu 4.2's result is logged.
func TestUnixRelativeName(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "unixrel", t.TempDir())
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.CheckImages(t, dir)
	testutil.RestoreDetached(t, dir, v)
	v.TermAndCheck(t)

	w := testutil.StartVictim(t, "unixrel", t.TempDir())
	w.WaitReady(t)
	t.Logf("criu 4.2 on unixrel: %s", testutil.CriuOutcome(t, w))
}
