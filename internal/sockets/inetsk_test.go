package sockets

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// criu keeps addresses as the bytes of in_addr/in6_addr read as native
// u32 words: crit shows them with inet_ntop of those bytes.
func TestAddrWords(t *testing.T) {
	for _, s := range []string{"127.0.0.1", "10.1.2.3", "::1", "fe80::1:2", "::ffff:127.0.0.1", "0.0.0.0"} {
		a := netip.MustParseAddr(s)
		fam := uint32(unix.AF_INET)
		if a.Is6() {
			fam = unix.AF_INET6
		}
		w := addrWords(a)
		got, err := wordsAddr(fam, w)
		if err != nil || got != a {
			t.Errorf("%s: words %#x -> %v, %v", s, w, got, err)
		}
	}
	if w := addrWords(netip.MustParseAddr("127.0.0.1")); len(w) != 1 || w[0] != 0x0100007f {
		t.Errorf("127.0.0.1 is %#x, want [0x100007f] as criu writes it", w)
	}
	if _, err := wordsAddr(unix.AF_INET6, []uint32{1}); !errors.Is(err, images.ErrCorrupt) {
		t.Errorf("one word for IPv6: %v, want ErrCorrupt", err)
	}
}

// A connection in the images needs --tcp-established or --tcp-close,
// and a damaged entry is refused before any socket is made.
func TestOpenInetRefuses(t *testing.T) {
	ie := &sk_inet.InetSkEntry{
		Id: proto.Uint32(1), Ino: proto.Uint32(99), Family: proto.Uint32(unix.AF_INET), Type: proto.Uint32(unix.SOCK_STREAM),
		Proto: proto.Uint32(unix.IPPROTO_TCP), State: proto.Uint32(linux.TCPEstablished), SrcPort: proto.Uint32(1234),
		DstPort: proto.Uint32(80), Flags: proto.Uint32(2), Backlog: proto.Uint32(0),
		SrcAddr: addrWords(netip.MustParseAddr("127.0.0.1")), DstAddr: addrWords(netip.MustParseAddr("127.0.0.2")),
		Fown: files.AnonFown(),
	}
	fe := &fdinfo.FileEntry{Type: fdinfo.FdTypes_INETSK.Enum(), Id: proto.Uint32(1), Isk: ie}
	r := files.NewRestorer(files.RestoreOptions{}, nil, nil, nil)
	_, err := openInet(r, fe)
	if err == nil || !strings.Contains(err.Error(), "--tcp-established") || !strings.Contains(err.Error(), "127.0.0.1:1234 -> 127.0.0.2:80") {
		t.Errorf("established without the flag: %v", err)
	}
	bad := proto.Clone(fe).(*fdinfo.FileEntry)
	bad.Isk.SrcAddr = []uint32{1, 2}
	if _, err := openInet(r, bad); !errors.Is(err, images.ErrCorrupt) {
		t.Errorf("two address words for IPv4: %v, want ErrCorrupt", err)
	}
	bad = proto.Clone(fe).(*fdinfo.FileEntry)
	bad.Isk.SrcPort = proto.Uint32(70000)
	if _, err := openInet(r, bad); !errors.Is(err, images.ErrCorrupt) {
		t.Errorf("port 70000: %v, want ErrCorrupt", err)
	}
	bad = proto.Clone(fe).(*fdinfo.FileEntry)
	bad.Isk = nil
	if _, err := openInet(r, bad); !errors.Is(err, images.ErrCorrupt) {
		t.Errorf("no isk: %v, want ErrCorrupt", err)
	}
}

// Reading a connection in repair mode does not consume its queues, and
// leaving repair mode gives back SO_REUSEADDR.
func TestReadTCPStreamPeeks(t *testing.T) {
	testutil.RequireRootFor(t, "TCP_REPAIR needs CAP_NET_ADMIN")
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	f, _ := s.(*net.TCPConn).File()
	defer f.Close()
	fd := int(f.Fd())
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	for i := 0; i < 100; i++ {
		if n, _ := unix.IoctlGetInt(fd, unix.SIOCINQ); n == 5 {
			break
		}
		unix.Nanosleep(&unix.Timespec{Nsec: 1e6}, nil)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		t.Fatal(err)
	}
	st := &tcpDump{repaired: []*repairedSk{{fd: fd, reuse: true, repair: true}}}
	saved, err := readTCPStream(fd)
	if err != nil {
		t.Fatal(err)
	}
	if saved.state != linux.TCPEstablished || string(saved.inq) != "hello" || saved.e.GetInqLen() != 5 {
		t.Fatalf("state %d, inq %q (%d)", saved.state, saved.inq, saved.e.GetInqLen())
	}
	dup, _ := unix.Dup(fd)
	st.repaired[0].fd = dup
	if err := st.finish(false); err != nil {
		t.Fatal(err)
	}
	if v, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR); v != 1 {
		t.Errorf("SO_REUSEADDR %d after repair mode, want 1", v)
	}
	b := make([]byte, 16)
	n, err := f.Read(b)
	if err != nil || string(b[:n]) != "hello" {
		t.Errorf("after the dump the socket reads %q, %v", b[:n], err)
	}
}

// TestRefusedInetWording: a refused inet socket names its type and
// protocol, not a list of guesses.
func TestRefusedInetWording(t *testing.T) {
	for _, c := range []struct {
		typ, proto int
		want       string
	}{
		{unix.SOCK_STREAM, unix.IPPROTO_SCTP, "SOCK_STREAM, protocol 132 (SCTP)"},
		{unix.SOCK_SEQPACKET, unix.IPPROTO_SCTP, "SOCK_SEQPACKET, protocol 132 (SCTP)"},
		{unix.SOCK_DCCP, unix.IPPROTO_DCCP, "6, protocol 33 (DCCP)"},
		{unix.SOCK_STREAM, 200, "SOCK_STREAM, protocol 200"},
	} {
		if got := sockTypeName(c.typ) + ", protocol " + ipProtoName(c.proto); got != c.want {
			t.Errorf("type %d protocol %d: %q, want %q", c.typ, c.proto, got, c.want)
		}
	}
}
