package pstree

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/ptrace"
)

// Entry is the pstree.img entry of a dumped process with its threads
// (tids); a zombie has none and lists itself, as criu does.
func Entry(pid, ppid, pgid, sid int, tids []int, zombie bool) *pstree.PstreeEntry {
	e := &pstree.PstreeEntry{
		Pid:  proto.Uint32(uint32(pid)),
		Ppid: proto.Uint32(uint32(ppid)),
		Pgid: proto.Uint32(uint32(pgid)),
		Sid:  proto.Uint32(uint32(sid)),
	}
	if zombie {
		e.Threads = []uint32{uint32(pid)}
	}
	for _, tid := range tids {
		e.Threads = append(e.Threads, uint32(tid))
	}
	return e
}

// KillSeized kills a dumped tree that stasis has seized: pids are its
// processes, parents first, and tids[k] the threads of pids[k], the
// leader first. It returns once every thread is dead.
func KillSeized(pids []int, tids [][]int) error {
	// Kill leaves first would let parents see SIGCHLD; killing the root
	// first is what criu does and what a user expects: the tree is gone.
	for _, pid := range pids {
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && err != unix.ESRCH {
			return fmt.Errorf("kill dumped pid %d: %w", pid, err)
		}
	}
	// The tracer sees each death first; parents reap after. A leader's
	// exit is reported only once its other threads are gone: them first.
	// Children before parents: a pid namespace's init ends only once it
	// has reaped its children, which it can only after the tracer.
	for k := len(pids) - 1; k >= 0; k-- {
		for i := len(tids[k]) - 1; i >= 0; i-- {
			tid := tids[k][i]
			for {
				if _, err := ptrace.Wait(tid); err != nil {
					break
				}
				_ = ptrace.Cont(tid, 0)
			}
		}
	}
	return nil
}
