package sockets

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	sk_packet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
)

// diagMsg builds a unix_diag_msg with attributes, as the kernel sends it.
func diagMsg(ino uint32, typ, state uint8, attrs ...[]byte) []byte {
	b := make([]byte, unixDiagMsgLen)
	b[0], b[1], b[2] = unix.AF_UNIX, typ, state
	binary.NativeEndian.PutUint32(b[4:], ino)
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

func nlattr(typ uint16, v []byte) []byte {
	b := make([]byte, 4, 4+len(v)+3)
	binary.NativeEndian.PutUint16(b, uint16(4+len(v)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func u32s(vs ...uint32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.NativeEndian.AppendUint32(b, v)
	}
	return b
}

func TestParseUnixDiag(t *testing.T) {
	m := diagMsg(77, unix.SOCK_STREAM, linux.TCPListen,
		nlattr(unixDiagName, []byte("/run/x.sock\x00")), // 12 bytes: aligned
		nlattr(unixDiagVFS, u32s(5, 9)),
		nlattr(unixDiagPeer, u32s(0)),
		nlattr(unixDiagIcons, u32s(101, 102)),
		nlattr(unixDiagRqlen, u32s(2, 8)),
		nlattr(unixDiagShutdown, []byte{2}),
		nlattr(99, []byte{1, 2, 3}), // unknown: skipped
	)
	d, err := parseUnixDiag(m)
	if err != nil {
		t.Fatal(err)
	}
	if d.Ino != 77 || d.Type != unix.SOCK_STREAM || d.State != linux.TCPListen || string(d.Name) != "/run/x.sock\x00" ||
		d.VFSIno != 5 || d.VFSDev != 9 || len(d.Icons) != 2 || d.Icons[1] != 102 || d.Rqueue != 2 || d.Wqueue != 8 || d.Shutdown != 2 {
		t.Errorf("parsed %+v", d)
	}
	// An abstract name of odd length is padded.
	d, err = parseUnixDiag(diagMsg(3, unix.SOCK_DGRAM, linux.TCPClose, nlattr(unixDiagName, []byte("\x00ab")), nlattr(unixDiagPeer, u32s(4))))
	if err != nil || string(d.Name) != "\x00ab" || d.Peer != 4 {
		t.Errorf("abstract: %+v, %v", d, err)
	}
	if got := unixName(d.Name); got != "abstract @ab" {
		t.Errorf("unixName = %q", got)
	}
}

func TestParseUnixDiagMalformed(t *testing.T) {
	long := nlattr(unixDiagPeer, u32s(1))
	binary.NativeEndian.PutUint16(long, 200) // longer than the message
	for name, m := range map[string][]byte{
		"short header":    make([]byte, 10),
		"attr too long":   diagMsg(1, 1, 1, long),
		"attr too short":  diagMsg(1, 1, 1, []byte{2, 0, 2, 0}),
		"short peer":      diagMsg(1, 1, 1, nlattr(unixDiagPeer, []byte{1, 2})),
		"short rqlen":     diagMsg(1, 1, 1, nlattr(unixDiagRqlen, u32s(1))),
		"empty shutdown":  diagMsg(1, 1, 1, nlattr(unixDiagShutdown, nil)),
		"short vfs entry": diagMsg(1, 1, 1, nlattr(unixDiagVFS, u32s(1))),
	} {
		if _, err := parseUnixDiag(m); err == nil || !strings.Contains(err.Error(), "sock_diag") {
			t.Errorf("%s: err %v", name, err)
		}
	}
}

// TestReadUnixDiagSelf finds a socketpair of the test through sock_diag,
// each end the other's peer.
func TestReadUnixDiagSelf(t *testing.T) {
	sv, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sv[0])
	defer unix.Close(sv[1])
	unix.Shutdown(sv[0], unix.SHUT_WR)
	all, err := readUnixDiag(-1)
	if err != nil {
		t.Fatal(err)
	}
	var st [2]unix.Stat_t
	unix.Fstat(sv[0], &st[0])
	unix.Fstat(sv[1], &st[1])
	a, b := all[uint32(st[0].Ino)], all[uint32(st[1].Ino)]
	if a == nil || b == nil {
		t.Fatalf("socketpair %d/%d not listed among %d sockets", st[0].Ino, st[1].Ino, len(all))
	}
	if a.Peer != b.Ino || b.Peer != a.Ino || a.Type != unix.SOCK_SEQPACKET || a.State != linux.TCPEstablished || a.Shutdown != 2 || b.Shutdown != 1 {
		t.Errorf("diag %+v / %+v", a, b)
	}
}

// TestPeekUnixQueue: the messages come out whole and in order, nothing is
// consumed, and the peek offset the task had is put back.
func TestPeekUnixQueue(t *testing.T) {
	for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET} {
		sv, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		msgs := []string{"one", "two two", strings.Repeat("3", 70000)}
		for _, m := range msgs {
			if _, err := unix.Write(sv[0], []byte(m)); err != nil {
				t.Fatal(err)
			}
		}
		if typ == unix.SOCK_DGRAM {
			unix.SetsockoptInt(sv[1], unix.SOL_SOCKET, unix.SO_PEEK_OFF, 2)
		}
		got, err := peekUnixQueue(sv[1], typ)
		if err != nil {
			t.Fatalf("type %d: %v", typ, err)
		}
		joined := ""
		for _, g := range got {
			joined += string(g.data) + "|"
		}
		want := strings.Join(msgs, "|") + "|"
		if typ == unix.SOCK_STREAM {
			joined, want = strings.ReplaceAll(joined, "|", ""), strings.ReplaceAll(want, "|", "")
		} else if len(got) != len(msgs) {
			t.Errorf("type %d: %d messages, want %d", typ, len(got), len(msgs))
		}
		if joined != want {
			t.Errorf("type %d: peeked %d bytes, not the queue", typ, len(joined))
		}
		off, _ := unix.GetsockoptInt(sv[1], unix.SOL_SOCKET, unix.SO_PEEK_OFF)
		if want := map[bool]int{true: 2, false: -1}[typ == unix.SOCK_DGRAM]; off != want {
			t.Errorf("type %d: peek offset %d after the dump, want %d", typ, off, want)
		}
		unix.SetsockoptInt(sv[1], unix.SOL_SOCKET, unix.SO_PEEK_OFF, -1)
		buf := make([]byte, 16)
		if n, _ := unix.Read(sv[1], buf); string(buf[:n]) != "one" && typ != unix.SOCK_STREAM {
			t.Errorf("type %d: first message %q after the peek, want one", typ, buf[:n])
		}
		unix.Close(sv[0])
		unix.Close(sv[1])
	}
}

// TestPeekUnixQueueSCMRights: the fds a queue carries come with their
// message, installed in stasis as the same open files; on a stream the
// bytes before them are a message of their own, and nothing is consumed.
func TestPeekUnixQueueSCMRights(t *testing.T) {
	for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_SEQPACKET} {
		sv, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		unix.Write(sv[0], []byte("before"))
		if err := unix.Sendmsg(sv[0], []byte("with fds"), unix.UnixRights(p[0], p[1]), nil, 0); err != nil {
			t.Fatal(err)
		}
		unix.Write(sv[0], []byte("after"))
		got, err := peekUnixQueue(sv[1], typ)
		if err != nil {
			t.Fatalf("type %d: %v", typ, err)
		}
		var msgs []string
		for _, g := range got {
			msgs = append(msgs, fmt.Sprintf("%s/%d", g.data, len(g.fds)))
		}
		if s := strings.Join(msgs, " "); s != "before/0 with fds/2 after/0" {
			t.Errorf("type %d: peeked %s", typ, s)
		}
		for _, g := range got {
			for i, fd := range g.fds {
				if c, err := linux.KcmpOrder(os.Getpid(), os.Getpid(), linux.KcmpFile, fd, p[i]); err != nil || c != 0 {
					t.Errorf("type %d: fd %d in flight is not the pipe end %d sent (%d, %v)", typ, i, p[i], c, err)
				}
			}
			closeAll(g.fds)
		}
		buf := make([]byte, 64)
		if n, _ := unix.Read(sv[1], buf); string(buf[:n]) != map[bool]string{true: "beforewith fds", false: "before"}[typ == unix.SOCK_STREAM] {
			t.Errorf("type %d: first read %q after the peek", typ, buf[:n])
		}
		closeAll([]int{sv[0], sv[1], p[0], p[1]})
	}
}

// TestUnixOptsRoundTrip: options dumped from one socket are given to a
// new one.
func TestUnixOptsRoundTrip(t *testing.T) {
	a, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	b, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	defer unix.Close(a)
	defer unix.Close(b)
	unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_SNDBUF, 20000)
	unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_RCVBUF, 30000)
	unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_PRIORITY, 3)
	unix.SetsockoptTimeval(a, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2, Usec: 500000})
	o, err := dumpUnixOpts(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := applyUnixOpts(b, o); err != nil {
		t.Fatal(err)
	}
	o2, err := dumpUnixOpts(b)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(o, o2) {
		t.Errorf("options\n dumped   %v\n restored %v", o, o2)
	}
}

func TestExternalUnixOption(t *testing.T) {
	if err := (files.DumpOptions{External: []string{"unix[123]"}}).Check(); err != nil {
		t.Error(err)
	}
	if err := (files.DumpOptions{External: []string{"unix[abc]"}}).Check(); err == nil {
		t.Error("unix[abc] accepted")
	}
}

// TestReadUnixQueuesCorrupt: a message for a socket not in the dump, or
// with fds not in files.img or of another type, is refused with the image and the offset of its entry.
func TestReadUnixQueuesCorrupt(t *testing.T) {
	sock := &usk{ue: &sk_unix.UnixSkEntry{Id: proto.Uint32(3), Ino: proto.Uint32(9), Type: proto.Uint32(1), Uflags: proto.Uint32(0)}}
	ext := &usk{ue: &sk_unix.UnixSkEntry{Id: proto.Uint32(4), Uflags: proto.Uint32(uskExtern)}}
	for name, c := range map[string]struct {
		e    *sk_packet.SkPacketEntry
		want string
	}{
		"unknown id":    {&sk_packet.SkPacketEntry{IdFor: proto.Uint32(7), Length: proto.Uint32(2)}, "file id 7"},
		"external":      {&sk_packet.SkPacketEntry{IdFor: proto.Uint32(4), Length: proto.Uint32(2)}, "file id 4"},
		"unknown right": {&sk_packet.SkPacketEntry{IdFor: proto.Uint32(3), Length: proto.Uint32(2), Scm: []*sk_packet.ScmEntry{{Type: proto.Uint32(1), Rights: []uint32{3, 5}}}}, "file id 5, which is not in files.img"},
		"credentials":   {&sk_packet.SkPacketEntry{IdFor: proto.Uint32(3), Length: proto.Uint32(2), Scm: []*sk_packet.ScmEntry{{Type: proto.Uint32(2)}}}, "type 2"},
	} {
		dir, err := images.Create(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		w, err := dir.NewWriter("sk-queues.img")
		if err != nil {
			t.Fatal(err)
		}
		w.Write(&sk_packet.SkPacketEntry{IdFor: proto.Uint32(3), Length: proto.Uint32(2)})
		w.WriteExtra([]byte("ok"))
		w.Write(c.e)
		w.WriteExtra([]byte("hi"))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		sock.packets = nil
		err = readUnixQueues(dir, map[uint32]*usk{3: sock, 4: ext}, func(id uint32) bool { return id == 3 || id == 4 })
		var ie *images.Error
		if !errors.As(err, &ie) || ie.File != "sk-queues.img" || ie.Offset <= 8 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v", name, err)
		}
	}
}

// TestPeekStreamFdsPositions: on a stream, each run of bytes that came
// with files is a message from its first byte, wherever it is, and the
// bytes between them stay together.
func TestPeekStreamFdsPositions(t *testing.T) {
	sv, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(sv[:])
	big := strings.Repeat("x", 100000)
	for _, m := range []struct {
		data string
		fds  bool
	}{{"a", true}, {"bb", false}, {"ccc", false}, {"dddd", true}, {"e", true}, {big, false}, {"f", true}} {
		var oob []byte
		if m.fds {
			oob = unix.UnixRights(0)
		}
		for sent := 0; sent < len(m.data); {
			n, err := unix.SendmsgN(sv[0], []byte(m.data[sent:]), oob, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			sent, oob = sent+n, nil
		}
	}
	got, err := peekUnixQueue(sv[1], unix.SOCK_STREAM)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, g := range got {
		msgs = append(msgs, fmt.Sprintf("%d/%d", len(g.data), len(g.fds)))
		closeAll(g.fds)
	}
	if s, want := strings.Join(msgs, " "), fmt.Sprintf("1/1 5/0 4/1 1/1 %d/0 1/1", len(big)); s != want {
		t.Errorf("peeked %s, want %s", s, want)
	}
}
