package core

import (
	"fmt"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"
)

// Credentials are kept as the task's own user namespace sees them, as
// criu's parasite reads them (getresuid inside the task): /proc shows
// stasis the global ids, so a task in another user namespace has them
// turned through its uid_map and gid_map, on dump and when a restore
// compares what a task holds with its image (the injected set*id calls
// take the namespace's ids).

var selfUserNS = sync.OnceValue(func() uint64 {
	var st unix.Stat_t
	if unix.Stat("/proc/self/ns/user", &st) != nil {
		return 0
	}
	return st.Ino
})

// userView returns st with its ids as task pid's user namespace sees them
// (st itself when that is stasis' own).
func userView(pid int, st *proc.Status) (*proc.Status, error) {
	var ns unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/user", pid), &ns); err != nil {
		return nil, fmt.Errorf("user namespace of tid %d: %w", pid, err)
	}
	if ns.Ino == selfUserNS() {
		return st, nil
	}
	uids, err := proc.ReadIDMap(pid, "uid_map")
	if err != nil {
		return nil, err
	}
	gids, err := proc.ReadIDMap(pid, "gid_map")
	if err != nil {
		return nil, err
	}
	v := *st
	for i := range v.Uid {
		v.Uid[i] = uids.Inside(st.Uid[i])
		v.Gid[i] = gids.Inside(st.Gid[i])
	}
	v.Groups = slices.Clone(st.Groups)
	for i, g := range v.Groups {
		v.Groups[i] = gids.Inside(g)
	}
	return &v, nil
}
