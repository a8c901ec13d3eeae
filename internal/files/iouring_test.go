package files

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ext_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ext-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
)

// TestUringInfo: the fdinfo of MariaDB's idle ring (as measured on 6.18)
// is kept; each thing stasis cannot restore is named.
func TestUringInfo(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "fdinfo-io_uring"))
	if err != nil {
		t.Fatal(err)
	}
	idle := string(b)
	for _, c := range []struct{ name, from, to, why string }{
		{"idle", "", "", ""},
		{"inflight", "CqTail:\t94\nCachedCqTail:\t94", "CqTail:\t93\nCachedCqTail:\t93", "in flight"},
		{"sqpoll", "SqThread:\t-1", "SqThread:\t4242", "SQPOLL"},
		{"files", "UserFiles:\t0", "UserFiles:\t3", "registered files"},
		{"bufs", "UserBufs:\t0", "UserBufs:\t2", "registered buffers"},
		{"poll", "PollList:\n", "PollList:\n  op=6, task_works=0\n", "poll"},
		{"overflow", "CqOverflowList:\n", "CqOverflowList:\n  user_data=1, res=0, flags=0\n", "overflow"},
		{"napi", "NAPI:\tdisabled", "NAPI:\tenabled", "NAPI"},
		{"cached", "CachedCqTail:\t94", "CachedCqTail:\t95", "between two states"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fi, err := proc.ParseFdinfo(strings.NewReader(strings.Replace(idle, c.from, c.to, 1)))
			if err != nil {
				t.Fatal(err)
			}
			u, why, err := uringInfo(&Fd{Pid: 1, Num: 9, Info: fi})
			if err != nil {
				t.Fatal(err)
			}
			if u.sqEntries != 2048 || u.cqEntries != 4096 || u.sqHead != 94 {
				t.Errorf("ring %+v, want 2048/4096 at 94", u)
			}
			if c.why == "" && why != "" || !strings.Contains(why, c.why) {
				t.Errorf("why %q, want %q", why, c.why)
			}
		})
	}
	fi, _ := proc.ParseFdinfo(bytes.NewReader([]byte(strings.Replace(idle, "SqMask:\t0x7ff", "SqMask:\t0x7fe", 1))))
	if _, _, err := uringInfo(&Fd{Pid: 1, Num: 9, Info: fi}); err == nil {
		t.Error("a ring of 2047 SQEs was taken")
	}
}

func uringEntry(sq, cq, head, tail uint32, sqes int) *fdinfo.FileEntry {
	var b []byte
	for n, v := range map[protowire.Number]uint32{fieldUringSQEntries: sq, fieldUringCQEntries: cq, fieldUringSQHead: head, fieldUringCQTail: tail} {
		b = protowire.AppendTag(b, n, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(v))
	}
	b = protowire.AppendTag(b, fieldUringSQEs, protowire.BytesType)
	b = protowire.AppendBytes(b, make([]byte, sqes))
	e := &ext_file.ExtFileEntry{Id: proto.Uint32(1)}
	e.ProtoReflect().SetUnknown(b)
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_EXT.Enum(), Id: proto.Uint32(1), Ext: e}
}

// TestUringOf: an entry is checked before any ring is made from it.
func TestUringOf(t *testing.T) {
	if u, ok, err := uringOf(uringEntry(8, 32, 41, 41, 512)); !ok || err != nil || u.sqEntries != 8 || u.cqEntries != 32 || u.sqHead != 41 {
		t.Errorf("good entry: %+v %v %v", u, ok, err)
	}
	for _, bad := range []*fdinfo.FileEntry{
		uringEntry(7, 32, 0, 0, 448),      // not a power of two
		uringEntry(8, 4, 0, 0, 512),       // fewer CQEs than SQEs
		uringEntry(8, 32, 5, 4, 512),      // in flight
		uringEntry(8, 32, 0, 0, 64),       // SQEs cut short
		uringEntry(1<<16, 1<<17, 0, 0, 0), // too large
	} {
		if _, _, err := uringOf(bad); !errors.Is(err, images.ErrCorrupt) {
			t.Errorf("entry %v: %v, want corrupt", bad, err)
		}
	}
	if _, ok, err := uringOf(&fdinfo.FileEntry{Type: fdinfo.FdTypes_EXT.Enum(), Id: proto.Uint32(1), Ext: &ext_file.ExtFileEntry{Id: proto.Uint32(1)}}); ok || err != nil {
		t.Errorf("a plugin's external file taken for a ring: %v %v", ok, err)
	}
}

// TestUringRemake: a ring made again from an entry has the dumped
// counters (wrapped past the ring's size) and bytes; rings whose bytes
// disagree with the counters are refused.
func TestUringRemake(t *testing.T) {
	l, err := newUring(4, 8)
	if err != nil {
		t.Skipf("io_uring: %v", err)
	}
	NewAnonFile(l.fd, "probe").Close()
	u := uringFile{sqEntries: 4, cqEntries: 8, sqHead: 11, cqTail: 11}
	u.rings, u.sqes = make([]byte, l.ringsLen), make([]byte, l.sqesLen)
	if _, err := openUring(1, u); !errors.Is(err, images.ErrCorrupt) {
		t.Errorf("rings at 0 for counters at 11: %v, want corrupt", err)
	}
	for _, off := range []uint32{l.sqHead, l.sqTail, l.cqHead, l.cqTail} {
		u.rings[off] = 11
	}
	u.rings[l.cqHead] = 9 // two CQEs not reaped
	u.sqes[0] = 0x5a
	f, err := openUring(1, u)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := proc.ReadFdinfo(os.Getpid(), int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"SqHead": "11", "CachedSqHead": "11", "CqTail": "11", "CachedCqTail": "11", "CqHead": "9"} {
		if got := info.Extra[k]; got != want {
			t.Errorf("%s %s, want %s", k, got, want)
		}
	}
}

// FuzzUringOf: no bytes in an EXT entry's fields make the decoder panic
// or let a ring of a bad geometry through.
func FuzzUringOf(f *testing.F) {
	f.Add([]byte(uringEntry(8, 32, 41, 41, 512).GetExt().ProtoReflect().GetUnknown()))
	f.Add([]byte{0xc0, 0x07, 0x08})
	f.Fuzz(func(t *testing.T, b []byte) {
		e := &ext_file.ExtFileEntry{Id: proto.Uint32(1)}
		e.ProtoReflect().SetUnknown(b)
		u, ok, err := uringOf(&fdinfo.FileEntry{Type: fdinfo.FdTypes_EXT.Enum(), Id: proto.Uint32(1), Ext: e})
		if ok && err == nil && (u.sqEntries == 0 || u.sqEntries&(u.sqEntries-1) != 0 || len(u.sqes) != uringSQESize*int(u.sqEntries)) {
			t.Errorf("bad ring taken: %+v", u)
		}
	})
}
