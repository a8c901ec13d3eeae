package restore

import (
	"github.com/stasis-cr/stasis/internal/pstree"
)

// createThreads creates the other threads of the process with their
// tids, many at once (pstree.CloneThreads), then puts each in its
// cgroups.
func (tr *taskRestorer) createThreads() error {
	if !tr.img.Live() {
		return nil
	}
	tids := tr.img.Entry.GetThreads()[1:]
	pids := make([][]int, len(tids))
	for i, tid := range tids {
		pids[i] = tr.r.ns.ThreadTid(tr.img.Pid(), i+1, int(tid))
	}
	ts, err := pstree.CloneThreads(tr.t, tr.s, pids, pstree.ThreadFlags, tr.r.scratchBase+seqCodeOff)
	// The threads made before an error too: the rollback reaps them.
	for i, t := range ts {
		if t != nil {
			tr.threads = append(tr.threads, t)
			tr.r.files.HostPids[int(tids[i])] = t.Tid
		}
	}
	if err != nil {
		return err
	}
	for i, t := range ts {
		if err := tr.moveThread(i+1, t); err != nil {
			return err
		}
	}
	return nil
}
