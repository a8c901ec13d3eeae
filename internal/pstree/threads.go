package pstree

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/ptrace"
)

// maxCloners bounds the clone3 calls of a round of CloneThreads.
const maxCloners = 256

// CloneThreads creates threads of t's process (flags: ThreadFlags) with
// exactly their ids, pids[i] holding thread i's innermost first (as
// CloneWithPids takes them), and returns them stopped and traced, in the
// order of pids.
//
// One clone3 after the other from the leader costs a round trip to the
// kernel's scheduler each, a second for 10,000 threads. Any thread of a
// process can create another, so every thread made so far clones one
// more in each round, their calls injected at once (ptrace.Each): the
// rounds double the cloners up to maxCloners. A new thread is a copy of
// its cloner, which is itself a fresh copy of the leader: until the
// restore gives each its own state (the task state phase), they are all
// alike.
//
// On an error, the threads made so far are in the slice (nil for the
// others), for the caller's rollback to reap.
//
// With code, the address of ptrace.SeqCode in the process, each cloner of
// a round makes its clone3 calls as one table (ptrace.EachSeq): one stop
// per thread made, where an injected call stops the cloner twice.
func CloneThreads(t *ptrace.Task, s *ptrace.Scratch, pids [][]int, flags uint64, code uint64) ([]*ptrace.Task, error) {
	if code != 0 {
		return cloneThreadsSeq(t, s, pids, flags, code)
	}
	out := make([]*ptrace.Task, len(pids))
	// Each cloner's clone3 arguments in a slot of the scratch memory of
	// its own, big enough for the deepest set_tid.
	slot := 0
	for _, p := range pids {
		slot = max(slot, len(cloneArgs(0, p, flags)))
	}
	slot = (slot + 7) &^ 7
	slots := 0
	if slot > 0 {
		slots = min(maxCloners, int(s.Size)/slot)
	}
	if slots == 0 && len(pids) > 0 {
		return out, fmt.Errorf("create threads of pid %d: scratch of %d bytes holds no clone3 arguments of %d", t.Tgid(), s.Size, slot)
	}
	cloners := []*ptrace.Task{t}
	for next := 0; next < len(pids); {
		k := min(len(cloners), len(pids)-next, slots)
		round := cloners[:k]
		args := make([]byte, k*slot)
		for j, c := range round {
			copy(args[j*slot:], cloneArgs(s.Addr+uint64(j*slot), pids[next+j], flags))
			// What the call creates, and nothing from an earlier round.
			c.Forked = c.Forked[:0]
		}
		if _, err := s.Put(0, args); err != nil {
			return out, err
		}
		res, errs, err := ptrace.Each(round, unix.SYS_CLONE3, func(j int) []uint64 {
			return []uint64{s.Addr + uint64(j*slot), cloneArgsSize}
		})
		// Every thread a call made is taken, even when another failed:
		// the rollback reaps what is in out.
		var fail []error
		if err != nil {
			fail = append(fail, fmt.Errorf("create threads of pid %d: %w", t.Tgid(), err))
		}
		for j, c := range round {
			if errs[j] == nil && len(c.Forked) == 0 {
				continue // this injection failed: err says why
			}
			nt, cerr := cloned(c, pids[next+j], flags, res[j], errs[j])
			if cerr != nil {
				fail = append(fail, cerr)
				continue
			}
			out[next+j] = nt
			cloners = append(cloners, nt)
		}
		if len(fail) > 0 {
			return out, errors.Join(fail...)
		}
		next += k
	}
	return out, nil
}

// maxPerCloner bounds the clone3 calls of one cloner's table in a round:
// a cloner's calls are one after the other, the cloners' side by side.
const maxPerCloner = 8

// cloneThreadsSeq is CloneThreads with a table of calls per cloner.
func cloneThreadsSeq(t *ptrace.Task, s *ptrace.Scratch, pids [][]int, flags uint64, code uint64) ([]*ptrace.Task, error) {
	out := make([]*ptrace.Task, len(pids))
	slot := 0
	for _, p := range pids {
		slot = max(slot, len(cloneArgs(0, p, flags)))
	}
	slot = (slot + 7) &^ 7
	budget := int(s.Size) / (slot + ptrace.SeqEntrySize) // clones a round
	if budget == 0 && len(pids) > 0 {
		return out, fmt.Errorf("create threads of pid %d: scratch of %d bytes holds no clone3 arguments of %d", t.Tgid(), s.Size, slot)
	}
	cloners := []*ptrace.Task{t}
	for next := 0; next < len(pids); {
		k := min(len(pids)-next, budget, len(cloners)*maxPerCloner, maxCloners*maxPerCloner)
		per := (k + len(cloners) - 1) / len(cloners)
		round := cloners[:(k+per-1)/per]
		// The clone3 arguments of the round's k threads, then each
		// cloner's table of its calls.
		tabs := uint64(k * slot)
		buf := make([]byte, k*(slot+ptrace.SeqEntrySize))
		seqs := make([]ptrace.Seq, len(round))
		for j := range round {
			lo, hi := j*per, min((j+1)*per, k)
			calls := make([]ptrace.SeqCall, 0, hi-lo)
			for i := lo; i < hi; i++ {
				a := s.Addr + uint64(i*slot)
				copy(buf[i*slot:], cloneArgs(a, pids[next+i], flags))
				calls = append(calls, ptrace.SeqCall{Nr: unix.SYS_CLONE3, Args: [6]uint64{a, cloneArgsSize}})
			}
			ptrace.PutSeq(buf[tabs+uint64(lo*ptrace.SeqEntrySize):], calls)
			seqs[j] = ptrace.Seq{Code: code, Addr: s.Addr + tabs + uint64(lo*ptrace.SeqEntrySize), N: hi - lo}
		}
		if _, err := s.Put(0, buf); err != nil {
			return out, err
		}
		err := ptrace.EachSeq(round, seqs)
		// Every thread a table made is taken, even when another failed:
		// the rollback reaps what is in out.
		var fail []error
		if err != nil {
			fail = append(fail, fmt.Errorf("create threads of pid %d: %w", t.Tgid(), err))
		}
		res, rerr := s.Get(tabs, k*ptrace.SeqEntrySize)
		if rerr != nil {
			fail = append(fail, rerr)
		}
		for j, c := range round {
			lo, hi := j*per, min((j+1)*per, k)
			made := 0
			for i := lo; i < hi; i++ {
				if made >= len(c.Forked) {
					if err == nil && rerr == nil {
						if _, cerr := ptrace.SeqResult(res, i); cerr != nil {
							fail = append(fail, fmt.Errorf("create pid %d with clone3 in pid %d: %w", pids[next+i][0], c.Tid, cerr))
						} else {
							fail = append(fail, fmt.Errorf("clone3 for pid %d: no ptrace event for the new task", pids[next+i][0]))
						}
					}
					break
				}
				var r uint64
				if rerr == nil {
					var cerr error
					if r, cerr = ptrace.SeqResult(res, i); cerr != nil {
						// No task: its event is the next call's.
						if errors.Is(cerr, unix.EEXIST) {
							cerr = fmt.Errorf("create pid %d: %w", pids[next+i][0], ErrPidInUse)
						}
						fail = append(fail, fmt.Errorf("create pid %d with clone3 in pid %d: %w", pids[next+i][0], c.Tid, cerr))
						continue
					}
				}
				nt, cerr := take(c, c.Forked[made], pids[next+i], flags, r)
				made++
				if cerr != nil {
					fail = append(fail, cerr)
					continue
				}
				out[next+i] = nt
			}
		}
		for _, nt := range out[next : next+k] {
			if nt != nil {
				cloners = append(cloners, nt)
			}
		}
		if len(fail) > 0 {
			return out, errors.Join(fail...)
		}
		next += k
	}
	return out, nil
}
