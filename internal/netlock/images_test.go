package netlock

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/linux"
)

func inetEntry(id uint32, family, proto_, state uint32, src, dst []uint32, sport, dport uint32) *fdinfo.FileEntry {
	return &fdinfo.FileEntry{Id: proto.Uint32(id), Type: fdinfo.FdTypes_INETSK.Enum(), Isk: &sk_inet.InetSkEntry{
		Family: proto.Uint32(family), Proto: proto.Uint32(proto_), State: proto.Uint32(state),
		SrcAddr: src, DstAddr: dst, SrcPort: proto.Uint32(sport), DstPort: proto.Uint32(dport),
	}}
}

// TestConnsOf: the TCP connections of files.img, in criu's address
// words (the bytes of the address as little-endian u32s); listeners,
// closed and UDP sockets are not locked.
func TestConnsOf(t *testing.T) {
	v4a := []uint32{0x0100000a}                   // 10.0.0.1
	v4b := []uint32{0x0200000a}                   // 10.0.0.2
	v6a := []uint32{0, 0, 0, 0x01000000}          // ::1
	v6m := []uint32{0, 0, 0xffff0000, 0x0300000a} // ::ffff:10.0.0.3
	entries := map[uint32]*fdinfo.FileEntry{
		1: inetEntry(1, unix.AF_INET, unix.IPPROTO_TCP, 1, v4a, v4b, 80, 40000),
		2: inetEntry(2, unix.AF_INET6, unix.IPPROTO_TCP, 4, v6a, v6a, 443, 50000),
		3: inetEntry(3, unix.AF_INET, unix.IPPROTO_TCP, linux.TCPListen, v4a, []uint32{0}, 80, 0),
		4: inetEntry(4, unix.AF_INET, unix.IPPROTO_UDP, 1, v4a, v4b, 53, 53),
		5: inetEntry(5, unix.AF_INET, unix.IPPROTO_TCP, linux.TCPClose, v4a, v4b, 81, 82),
		6: inetEntry(6, unix.AF_INET6, unix.IPPROTO_TCP, 1, v6m, v6m, 8080, 1234),
		7: {Id: proto.Uint32(7), Type: fdinfo.FdTypes_PIPE.Enum()},
	}
	got, err := ConnsOf(maps.Values(entries))
	if err != nil {
		t.Fatal(err)
	}
	strs := make([]string, len(got))
	for i, c := range got {
		strs[i] = c.String()
	}
	slices.Sort(strs)
	want := []string{"10.0.0.1:80 -> 10.0.0.2:40000", "[::1]:443 -> [::1]:50000", "[::ffff:10.0.0.3]:8080 -> [::ffff:10.0.0.3]:1234"}
	if !slices.Equal(strs, want) {
		t.Fatalf("ConnsOf: %v, want %v", strs, want)
	}
	// An IPv6 socket connected to a v4-mapped address sends IPv4 packets.
	if _, v4 := connKey(Conn{Local: netip.MustParseAddrPort("[::ffff:10.0.0.1]:1"), Remote: netip.MustParseAddrPort("[::ffff:10.0.0.3]:2")}); !v4 {
		t.Errorf("v4-mapped connection keyed as IPv6")
	}

	for name, bad := range map[string]*fdinfo.FileEntry{
		"short address": inetEntry(9, unix.AF_INET6, unix.IPPROTO_TCP, 1, v4a, v6a, 1, 2),
		"big port":      inetEntry(9, unix.AF_INET, unix.IPPROTO_TCP, 1, v4a, v4b, 1, 70000),
		"family":        inetEntry(9, unix.AF_UNIX, unix.IPPROTO_TCP, 1, v4a, v4b, 1, 2),
	} {
		if _, err := ConnsOf(maps.Values(map[int]*fdinfo.FileEntry{0: bad})); err == nil || !strings.Contains(err.Error(), "inet socket id 9") {
			t.Errorf("%s: %v, want an error naming the entry", name, err)
		}
	}
}
