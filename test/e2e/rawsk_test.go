package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestRawPacketSockets dumps rawsk.c's packet sockets (bound to lo with
// options, a filter, a fanout group, memberships) and raw IPv4/IPv6
// sockets (ICMP filters, IP_HDRINCL, connected), restores them, and the
// victim checks its options and that each still sends and receives. In
// between, an image whose packet socket names an interface that does not
// exist must fail the restore with an error that says so.
func TestRawPacketSockets(t *testing.T) {
	testutil.RequireRoot(t)
	port := freePort(t, "127.0.0.1")
	if port >= 65535 {
		port = 40000
	}
	v := testutil.StartVictim(t, "rawsk", "all", strconv.Itoa(port))
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.CheckImages(t, dir)
	checkRawImages(t, dir)

	t.Run("missing-interface", func(t *testing.T) {
		bad := imageDirNoChecksums(t, dir)
		editFiles(t, bad, func(fe *fdinfo.FileEntry) {
			if pe := fe.GetPsk(); pe != nil && pe.GetIfindex() != 0 {
				pe.Ifindex = proto.Uint32(999999)
			}
		})
		msg := testutil.RestoreFail(t, bad)
		testutil.AssertContains(t, msg, "packet socket", "interface index 999999", "no such interface")
	})

	testutil.RestoreDetached(t, dir, v)
	v.TermAndCheck(t)
}

// checkRawImages checks what files.img says of the sockets, as criu
// writes it: the packet socket on lo with its filter and fanout group,
// the double membership as two entries, the raw sockets' filters.
func checkRawImages(t *testing.T, dir string) {
	t.Helper()
	fes := testutil.ReadImage(t, dir, "files.img", func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} })
	packets, raws, mcs := 0, 0, 0
	for _, fe := range fes {
		if pe := fe.GetPsk(); pe != nil {
			packets++
			mcs += len(pe.GetMclist())
			if pe.GetIfindex() != 0 && (len(pe.GetOpts().GetSoFilter()) != 8 || pe.Fanout == nil || pe.GetVersion() != unix.TPACKET_V2) {
				t.Errorf("packet socket on interface %d: filter of %d instructions, fanout %v, version %d; want 8, set, TPACKET_V2",
					pe.GetIfindex(), len(pe.GetOpts().GetSoFilter()), pe.Fanout, pe.GetVersion())
			}
		}
		if ie := fe.GetIsk(); ie != nil && ie.GetType() == unix.SOCK_RAW {
			raws++
			r := ie.GetIpOpts().GetRaw()
			switch ie.GetProto() {
			case unix.IPPROTO_ICMP:
				if len(r.GetIcmpvFilter()) != 1 {
					t.Errorf("raw ICMP socket: ICMP filter %v, want one word", r.GetIcmpvFilter())
				}
			case unix.IPPROTO_ICMPV6:
				if len(r.GetIcmpvFilter()) != 8 {
					t.Errorf("raw ICMPv6 socket: ICMPv6 filter %v, want 8 words", r.GetIcmpvFilter())
				}
			case unix.IPPROTO_UDP:
				if !r.GetHdrincl() || !r.GetNodefrag() || ie.GetState() != 1 {
					t.Errorf("raw UDP socket: hdrincl %v nodefrag %v state %d, want true, true, 1 (connected)", r.GetHdrincl(), r.GetNodefrag(), ie.GetState())
				}
			}
		}
	}
	if packets != 3 || raws != 3 || mcs != 3 {
		t.Errorf("files.img: %d packet sockets, %d raw sockets, %d memberships; want 3, 3, 3", packets, raws, mcs)
	}
}

// editFiles rewrites files.img of dir through fn.
func editFiles(t *testing.T, dir string, fn func(*fdinfo.FileEntry)) {
	t.Helper()
	d, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	fes := testutil.ReadImage(t, dir, "files.img", func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} })
	msgs := make([]proto.Message, len(fes))
	for i, fe := range fes {
		fn(fe)
		msgs[i] = fe
	}
	if err := os.Remove(filepath.Join(dir, "files.img")); err != nil {
		t.Fatal(err)
	}
	if err := d.Write("files.img", msgs...); err != nil {
		t.Fatal(err)
	}
}

// TestRawPacketRing: a packet socket with a TPACKET_V1 rx ring it has not
// mapped, and filters, comes back with its ring (pkttail.c has the mapped
// ones).
func TestRawPacketRing(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "rawsk", "ring")
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.RestoreDetached(t, dir, v)
	v.TermAndCheck(t)
}

// TestRawPacketUnsupported: a packet socket with an eBPF filter cannot be
// dumped: the dump fails naming the pid, the fd and why, and the victim
// runs on with its filter.
func TestRawPacketUnsupported(t *testing.T) {
	testutil.RequireRoot(t)
	for _, c := range []struct {
		mode string
		want []string
	}{
		{"ebpf", []string{"fd 40", "eBPF socket filter", "SO_ATTACH_BPF", "not supported"}},
	} {
		t.Run(c.mode, func(t *testing.T) {
			v := testutil.StartVictim(t, "rawsk", c.mode)
			v.WaitReady(t)
			msg := testutil.DumpFail(t, v.Pid, t.TempDir())
			testutil.AssertContains(t, msg, c.want...)
			assertNamesPID(t, msg, v.Pid)
			testutil.AssertRunning(t, v.Pid)
			v.TermAndCheck(t)
		})
	}
}
