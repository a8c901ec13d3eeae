package ns

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// TestCheckOwnNamespaces: stasis' own process passes and gets criu's ids
// of the dumping tool's namespaces (1..8 in criu's order).
func TestCheckOwnNamespaces(t *testing.T) {
	d := NewDumper()
	if err := d.Check(os.Getpid(), true); err != nil {
		t.Fatalf("Check(self) = %v", err)
	}
	e := &criucore.TaskKobjIdsEntry{}
	d.SetIDs(os.Getpid(), e)
	want := []uint32{1, 2, 3, 4, 5, 6, 7, 8}
	got := []uint32{e.GetPidNsId(), e.GetNetNsId(), e.GetIpcNsId(), e.GetUtsNsId(), e.GetTimeNsId(), e.GetMntNsId(), e.GetUserNsId(), e.GetCgroupNsId()}
	if !slices.Equal(got, want) {
		t.Errorf("ids of stasis' own namespaces %v, want %v", got, want)
	}
	if d.ImagePid(os.Getpid()) != os.Getpid() {
		t.Errorf("ImagePid(self) = %d", d.ImagePid(os.Getpid()))
	}
}

func entry(pid, ppid uint32, threads []uint32, nsPids, nsTids []uint32) *pstree.PstreeEntry {
	e := &pstree.PstreeEntry{Pid: proto.Uint32(pid), Ppid: proto.Uint32(ppid), Pgid: proto.Uint32(1), Sid: proto.Uint32(1), Threads: threads}
	var b []byte
	for _, p := range nsPids {
		b = protowire.AppendTag(b, fieldNsPids, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(p))
	}
	for _, p := range nsTids {
		b = protowire.AppendTag(b, fieldNsTids, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(p))
	}
	e.ProtoReflect().SetUnknown(b)
	// Through the wire, as an image holds it.
	raw, err := proto.Marshal(e)
	if err != nil {
		panic(err)
	}
	out := &pstree.PstreeEntry{}
	if err := proto.Unmarshal(raw, out); err != nil {
		panic(err)
	}
	return out
}

func ids(pidNS uint32) *criucore.TaskKobjIdsEntry {
	u := proto.Uint32
	return &criucore.TaskKobjIdsEntry{PidNsId: u(pidNS), NetNsId: u(2), IpcNsId: u(3), UtsNsId: u(4), TimeNsId: u(5), MntNsId: u(6), UserNsId: u(7), CgroupNsId: u(8)}
}

// TestNestedPids: a tree with a pid namespace nested below pid 2 gets a
// set_tid per level (innermost first), CLONE_NEWPID for the nested init,
// and group ids translated into each task's namespace.
func TestNestedPids(t *testing.T) {
	tasks := []Task{
		{IDs: ids(9), Pstree: entry(1, 0, []uint32{1}, nil, nil)},
		{Parent: 1, IDs: ids(9), Pstree: entry(2, 1, []uint32{2}, nil, nil)},
		{Parent: 2, IDs: ids(10), Pstree: entry(5, 2, []uint32{5, 6}, []uint32{1}, []uint32{1, 2})},
		{Parent: 5, IDs: ids(10), Pstree: entry(7, 5, []uint32{7}, []uint32{3}, []uint32{3})},
	}
	// pid 2 is the parent `unshare --pid --fork` leaves: its children
	// are born in the namespace of its child 5.
	b := tasks[1].Pstree.ProtoReflect().GetUnknown()
	b = protowire.AppendTag(b, fieldNsForChildren, protowire.VarintType)
	tasks[1].Pstree.ProtoReflect().SetUnknown(protowire.AppendVarint(b, 5))
	r, err := Load(nil, ids(1), tasks)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.tasks[2].forChildren; got != 5 {
		t.Errorf("pid 2: children born in the namespace of %d, want 5", got)
	}
	if !r.NewPidNS() {
		t.Error("the root does not start a pid namespace")
	}
	for _, c := range []struct {
		pid   int
		tid   []int
		flags uint64
	}{{1, []int{1}, cloneNewPid}, {2, []int{2}, 0}, {5, []int{1, 5}, cloneNewPid}, {7, []int{3, 7}, 0}} {
		got, flags := r.Clone(c.pid)
		if !slices.Equal(got, c.tid) || flags != c.flags {
			t.Errorf("Clone(%d) = %v %#x, want %v %#x", c.pid, got, flags, c.tid, c.flags)
		}
	}
	if got := r.ThreadTid(5, 1, 6); !slices.Equal(got, []int{2, 6}) {
		t.Errorf("ThreadTid(5, 1) = %v", got)
	}
	if got := r.LocalPid(7, 5); got != 1 {
		t.Errorf("LocalPid(7, 5) = %d, want 1", got)
	}
	if got := r.LocalPid(7, 1); got != 0 {
		t.Errorf("LocalPid(7, 1) = %d, want 0 (outside its namespace)", got)
	}
}

// TestLoadRefuses: a task in another uts namespace than the root's, a
// nested init that is not pid 1 there.
func TestLoadRefuses(t *testing.T) {
	uts := ids(1)
	uts.UtsNsId = proto.Uint32(12)
	for name, c := range map[string]struct {
		tasks []Task
		want  error
		msg   string
	}{
		"uts": {[]Task{{IDs: ids(1), Pstree: entry(1, 0, []uint32{1}, nil, nil)},
			{Parent: 1, IDs: uts, Pstree: entry(2, 1, []uint32{2}, nil, nil)}}, ErrNotSupported, "uts namespace"},
		"nested-init": {[]Task{{IDs: ids(1), Pstree: entry(1, 0, []uint32{1}, nil, nil)},
			{Parent: 1, IDs: ids(9), Pstree: entry(2, 1, []uint32{2}, []uint32{2}, []uint32{2})}}, ErrBadImage, "not 1"},
	} {
		_, err := Load(nil, ids(1), c.tasks)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: Load = %v, want %v naming %q", name, err, c.want, c.msg)
		}
	}
}
