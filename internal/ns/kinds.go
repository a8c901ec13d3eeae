package ns

import (
	"fmt"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// kind is one kind of namespace.
type kind struct {
	name      string // under /proc/PID/ns
	title     string // in messages: "mount namespace"
	flag      uint64 // CLONE_NEW*
	supported bool   // stasis dumps and restores it
	field     func(*criucore.TaskKobjIdsEntry) **uint32
}

// kinds in criu's order: its ids of its own namespaces (inventory
// root_ids) are numbered in this order.
var kinds = []kind{
	{"pid", "pid", unix.CLONE_NEWPID, true, func(e *criucore.TaskKobjIdsEntry) **uint32 { return &e.PidNsId }},
	{"net", "network", unix.CLONE_NEWNET, true, func(e *criucore.TaskKobjIdsEntry) **uint32 { return &e.NetNsId }},
	{"ipc", "ipc", unix.CLONE_NEWIPC, true, func(e *criucore.TaskKobjIdsEntry) **uint32 { return &e.IpcNsId }},
	{"uts", "uts", unix.CLONE_NEWUTS, true, func(e *criucore.TaskKobjIdsEntry) **uint32 { return &e.UtsNsId }},
	{"time", "time", unix.CLONE_NEWTIME, true, func(e *criucore.TaskKobjIdsEntry) **uint32 { return &e.TimeNsId }},
	{"mnt", "mount", unix.CLONE_NEWNS, true, func(e *criucore.TaskKobjIdsEntry) **uint32 { return &e.MntNsId }},
	{"user", "user", unix.CLONE_NEWUSER, true, func(e *criucore.TaskKobjIdsEntry) **uint32 { return &e.UserNsId }},
	{"cgroup", "cgroup", unix.CLONE_NEWCGROUP, true, func(e *criucore.TaskKobjIdsEntry) **uint32 { return &e.CgroupNsId }},
}

const (
	kPid  = 0
	kIpc  = 2
	kUts  = 3
	kTime = 4
	kMnt  = 5
	kUser = 6
	// kCgroup's namespace is made by internal/cgroup (the root unshares
	// it from its namespace's root cgroup), not by a clone flag.
	kCgroup = 7
)

// inodes are the namespaces of a task, by kind (0: unreadable).
type inodes [8]uint64

func readInodes(pid int) (inodes, error) {
	var in inodes
	for i, k := range kinds {
		var st unix.Stat_t
		path := fmt.Sprintf("/proc/%d/ns/%s", pid, k.name)
		if pid == 0 {
			// The thread's: the main thread may have been left in a
			// namespace a locked goroutine joined and ended on (Go
			// keeps that thread), the process's link shows its.
			path = "/proc/thread-self/ns/" + k.name
		}
		if err := unix.Stat(path, &st); err != nil {
			if pid == 0 {
				continue // a kind this kernel lacks
			}
			return in, fmt.Errorf("namespaces of pid %d: %s: %w", pid, k.name, err)
		}
		in[i] = st.Ino
	}
	return in, nil
}

// idTable numbers namespaces as criu does: one counter for all kinds,
// stasis' own first.
type idTable struct {
	ids  [8]map[uint64]uint32
	next uint32
}

func (t *idTable) id(k int, ino uint64) uint32 {
	if t.ids[k] == nil {
		t.ids[k] = map[uint64]uint32{}
	}
	if id, ok := t.ids[k][ino]; ok {
		return id
	}
	t.next++
	t.ids[k][ino] = t.next
	return t.next
}

// setIDs fills the namespace ids of e from the inodes of a task.
func (t *idTable) setIDs(e *criucore.TaskKobjIdsEntry, in inodes) {
	for i, k := range kinds {
		*k.field(e) = proto.Uint32(t.id(i, in[i]))
	}
}

// nsID returns the namespace id field of kind k in e (0 if unset).
func nsID(e *criucore.TaskKobjIdsEntry, k int) uint32 {
	if p := *kinds[k].field(e); p != nil {
		return *p
	}
	return 0
}
