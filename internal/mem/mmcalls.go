package mem

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/ptrace"
)

// MMCalls is what the mm entry needs of a process that only an injected
// call tells.
type MMCalls struct {
	Dumpable    uint64 // prctl(PR_GET_DUMPABLE)
	Brk         uint64 // brk(0): the program break
	ThpDisabled bool   // prctl(PR_GET_THP_DISABLE)
}

// AskMM asks the process of each task of ts (one thread of each) for its
// MMCalls, each call injected into every process at once (ptrace.Each):
// a tree's processes share the calls' round trips.
func AskMM(ts []*ptrace.Task) ([]MMCalls, error) {
	out := make([]MMCalls, len(ts))
	calls := []struct {
		what string
		args []uint64
		nr   uintptr
		keep func(c *MMCalls, r uint64)
	}{
		{"prctl(PR_GET_DUMPABLE)", []uint64{unix.PR_GET_DUMPABLE}, unix.SYS_PRCTL, func(c *MMCalls, r uint64) { c.Dumpable = r }},
		{"brk", []uint64{0}, unix.SYS_BRK, func(c *MMCalls, r uint64) { c.Brk = r }},
		{"prctl(PR_GET_THP_DISABLE)", []uint64{unix.PR_GET_THP_DISABLE}, unix.SYS_PRCTL, func(c *MMCalls, r uint64) { c.ThpDisabled = r != 0 }},
	}
	for _, c := range calls {
		res, errs, err := ptrace.Each(ts, c.nr, func(int) []uint64 { return c.args })
		if err != nil {
			return nil, fmt.Errorf("dump mm: %s: %w", c.what, err)
		}
		var fails []error
		for i, e := range errs {
			if e != nil {
				fails = append(fails, fmt.Errorf("dump mm of pid %d: %s: %w", ts[i].Tid, c.what, e))
				continue
			}
			c.keep(&out[i], res[i])
		}
		if err := errors.Join(fails...); err != nil {
			return nil, err
		}
	}
	return out, nil
}
