package sockets

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	packet_sock "github.com/checkpoint-restore/go-criu/v8/crit/images/packet-sock"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// criu's encoding of a classic BPF instruction: code<<48 | jt<<40 |
// jf<<32 | k, whatever the host's struct layout.
func TestSockFilterEncoding(t *testing.T) {
	b := make([]byte, 16)
	ne := binary.NativeEndian
	ne.PutUint16(b, 0x15)
	b[2], b[3] = 0, 5
	ne.PutUint32(b[4:], 0x0800)
	ne.PutUint16(b[8:], 0x06)
	ne.PutUint32(b[12:], 0xffff)
	prog := encodeFilter(b, 2)
	if prog[0] != 0x0015_00_05_00000800 || prog[1] != 0x0006_00_00_0000ffff {
		t.Fatalf("encoded %#x", prog)
	}
	f := decodeFilter(prog)
	if f[0] != (unix.SockFilter{Code: 0x15, Jt: 0, Jf: 5, K: 0x800}) || f[1].K != 0xffff {
		t.Errorf("decoded %+v", f)
	}
	if encodeFilter(b, 0) != nil {
		t.Error("no filter encodes as instructions")
	}
}

// A filter on a socket comes back on the socket restored from the entry.
func TestSockFilterRoundTrip(t *testing.T) {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	if prog, err := dumpSockFilter(s); err != nil || prog != nil {
		t.Fatalf("no filter: %#x, %v", prog, err)
	}
	want := []uint64{0x0006_00_00_00000000 | 42}
	if err := restoreSockFilter(s, want); err != nil {
		t.Fatal(err)
	}
	got, err := dumpSockFilter(s)
	if err != nil || len(got) != 1 || got[0] != want[0] {
		t.Fatalf("filter %#x, %v; want %#x", got, err, want)
	}
	if err := restoreSockFilter(s, make([]uint64, unix.BPF_MAXINSNS+1)); err == nil {
		t.Error("a filter longer than BPF_MAXINSNS was taken")
	}
}

func TestFindProcNetRaw(t *testing.T) {
	const raw = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
   1: 0100007F:0001 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1111 2 0000000000000000 0
  17: 00000000:0011 0100007F:0000 01 00000000:00000000 00:00000000 00000000     0        0 2222 2 0000000000000000 0
`
	e, err := findProcNetRaw(strings.NewReader(raw), 2222)
	if err != nil || e == nil || e.state != linux.TCPEstablished || len(e.remote) != 1 || e.remote[0] != 0x0100007f {
		t.Fatalf("2222: %+v, %v", e, err)
	}
	if a, _ := wordsAddr(unix.AF_INET, e.remote); a.String() != "127.0.0.1" {
		t.Errorf("remote %v, want 127.0.0.1", a)
	}
	if e, err := findProcNetRaw(strings.NewReader(raw), 1111); err != nil || e.state != linux.TCPClose {
		t.Errorf("1111: %+v, %v", e, err)
	}
	if e, err := findProcNetRaw(strings.NewReader(raw), 3333); err != nil || e != nil {
		t.Errorf("3333: %+v, %v", e, err)
	}
	const raw6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  58: 00000000000000000000000001000000:003A 00000000000000000000000001000000:0000 01 00000000:00000000 00:00000000 00000000     0        0 4444 2 0000000000000000 0
`
	e, err = findProcNetRaw(strings.NewReader(raw6), 4444)
	if err != nil || e == nil || len(e.remote) != 4 {
		t.Fatalf("raw6: %+v, %v", e, err)
	}
	if a, _ := wordsAddr(unix.AF_INET6, e.remote); a.String() != "::1" {
		t.Errorf("raw6 remote %v, want ::1", a)
	}
	if _, err := findProcNetRaw(strings.NewReader("1: 0100007F:0001 0100:0000 01 0 0 0 0 0 5555\n"), 5555); err == nil {
		t.Error("a short address was taken")
	}
}

// packet_diag_msg with INFO, MCLIST (one membership added twice) and
// FANOUT attributes.
func TestParsePacketDiag(t *testing.T) {
	ne := binary.NativeEndian
	msg := make([]byte, packetDiagMsgLen)
	msg[0], msg[1] = unix.AF_PACKET, unix.SOCK_RAW
	ne.PutUint16(msg[2:], unix.ETH_P_ALL) // host order
	ne.PutUint32(msg[4:], 777)
	attr := func(typ uint16, v []byte) {
		a := make([]byte, 4, 4+len(v)+3)
		ne.PutUint16(a, uint16(4+len(v)))
		ne.PutUint16(a[2:], typ)
		a = append(a, v...)
		for len(a)%4 != 0 {
			a = append(a, 0)
		}
		msg = append(msg, a...)
	}
	info := make([]byte, packetDiagInfoLen)
	ne.PutUint32(info, 1)
	ne.PutUint32(info[4:], unix.TPACKET_V2)
	ne.PutUint32(info[8:], 32)
	ne.PutUint32(info[12:], 100)
	ne.PutUint32(info[16:], 0x40)
	ne.PutUint32(info[20:], pdiAuxdata|pdiLoss)
	attr(packetDiagInfo, info)
	mc := make([]byte, packetMclistLen)
	ne.PutUint32(mc, 1)
	ne.PutUint32(mc[4:], 2)
	ne.PutUint16(mc[8:], unix.PACKET_MR_MULTICAST)
	ne.PutUint16(mc[10:], 6)
	copy(mc[12:], []byte{1, 0, 0x5e, 1, 2, 3})
	attr(packetDiagMclist, mc)
	attr(packetDiagFanout, []byte{0xd2, 0x04, 0, 0})
	ring := make([]byte, packetRingLen)
	for i, v := range []uint32{16384, 4, 2048, 32, 10, 16, 1} {
		ne.PutUint32(ring[4*i:], v)
	}
	attr(packetDiagTxRing, ring)
	d, err := parsePacketDiag(msg)
	if err != nil {
		t.Fatal(err)
	}
	if d.Ino != 777 || d.Protocol != htons(unix.ETH_P_ALL) || d.Ifindex != 1 || d.Version != unix.TPACKET_V2 ||
		d.Reserve != 32 || d.CopyThresh != 100 || d.Tstamp != 0x40 || d.Flags != pdiAuxdata|pdiLoss || d.Fanout != 1234 {
		t.Errorf("parsed %+v", d)
	}
	if len(d.Mclist) != 1 || d.Mclist[0].Count != 2 || len(d.Mclist[0].Addr) != 6 {
		t.Errorf("memberships %+v", d.Mclist)
	}
	if r := d.TxRing; d.RxRing != nil || r == nil || r.GetBlockSize() != 16384 || r.GetBlockNr() != 4 || r.GetFrameSize() != 2048 ||
		r.GetFrameNr() != 32 || r.GetRetireTmo() != 10 || r.GetSizeofPriv() != 16 || r.GetFeatures() != 1 {
		t.Errorf("rings: rx %v, tx %v", d.RxRing, d.TxRing)
	}
	short := append([]byte{}, msg...)
	attr(packetDiagRxRing, ring[:8])
	if _, err := parsePacketDiag(msg); err == nil {
		t.Error("a ring attribute of 8 bytes was taken")
	}
	msg = short
	if _, err := parsePacketDiag(msg[:packetDiagMsgLen]); err == nil {
		t.Error("a message without PACKET_DIAG_INFO was taken")
	}
	bad := append([]byte{}, msg...)
	ne.PutUint16(bad[packetDiagMsgLen:], 200) // INFO longer than the message
	if _, err := parsePacketDiag(bad); err == nil {
		t.Error("an attribute longer than the message was taken")
	}
}

// Damaged or unsupported packet entries are refused before anything is
// created, with errors that say what.
func TestOpenPacketBadEntries(t *testing.T) {
	testutil.RequireRootFor(t, "packet sockets need CAP_NET_RAW")
	entry := func(mod func(*packet_sock.PacketSockEntry)) *fdinfo.FileEntry {
		pe := &packet_sock.PacketSockEntry{Id: proto.Uint32(5), Type: proto.Uint32(unix.SOCK_RAW), Protocol: proto.Uint32(0),
			Flags: proto.Uint32(unix.O_RDWR), Ifindex: proto.Uint32(0), Fown: files.AnonFown(), Version: proto.Uint32(0),
			Reserve: proto.Uint32(0), AuxData: proto.Bool(false), OrigDev: proto.Bool(false), VnetHdr: proto.Bool(false),
			Loss: proto.Bool(false), Timestamp: proto.Uint32(0), CopyThresh: proto.Uint32(0)}
		mod(pe)
		return &fdinfo.FileEntry{Type: fdinfo.FdTypes_PACKETSK.Enum(), Id: proto.Uint32(5), Psk: pe}
	}
	for _, c := range []struct {
		name string
		mod  func(*packet_sock.PacketSockEntry)
		want error
	}{
		{"protocol", func(pe *packet_sock.PacketSockEntry) { pe.Protocol = proto.Uint32(0x10000) }, images.ErrCorrupt},
		{"type", func(pe *packet_sock.PacketSockEntry) { pe.Type = proto.Uint32(unix.SOCK_SEQPACKET) }, files.ErrUnsupported},
		{"ring", func(pe *packet_sock.PacketSockEntry) { pe.RxRing = &packet_sock.PacketRing{} }, images.ErrCorrupt},
		{"spkt-ring", func(pe *packet_sock.PacketSockEntry) {
			pe.Type = proto.Uint32(unix.SOCK_PACKET)
			pe.TxRing = &packet_sock.PacketRing{BlockSize: proto.Uint32(4096), BlockNr: proto.Uint32(1), FrameSize: proto.Uint32(2048), FrameNr: proto.Uint32(2)}
		}, images.ErrCorrupt},
		{"mcaddr", func(pe *packet_sock.PacketSockEntry) {
			pe.Mclist = []*packet_sock.PacketMclist{{Index: proto.Uint32(1), Type: proto.Uint32(0), Addr: make([]byte, 33)}}
		}, images.ErrCorrupt},
	} {
		r := files.NewRestorer(files.RestoreOptions{}, nil, nil, nil)
		f, err := openPacket(r, entry(c.mod))
		if f != nil {
			f.Close()
		}
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), "file id 5") {
			t.Errorf("%s: %v, want %v naming file id 5", c.name, err, c.want)
		}
	}
	// A good entry opens: an unbound socket of protocol 0.
	f, err := openPacket(files.NewRestorer(files.RestoreOptions{}, nil, nil, nil), entry(func(*packet_sock.PacketSockEntry) {}))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}
