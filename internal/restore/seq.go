package restore

import (
	"fmt"

	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/remote"
)

// A process's task and a thread's run many calls as tables through the
// injection page's ptrace.SeqCode.
var (
	_ remote.Seq = (*taskRestorer)(nil)
	_ remote.Seq = threadTask{}
)

func (tr *taskRestorer) Seq(calls []remote.Call) ([]uint64, []error, error) {
	return tr.seqIn(tr.t, calls)
}

func (th threadTask) Seq(calls []remote.Call) ([]uint64, []error, error) {
	return th.taskRestorer.seqIn(th.t, calls)
}

// seqIn runs calls in thread t of tr's process, as many tables as the
// scratch memory needs.
func (tr *taskRestorer) seqIn(t *ptrace.Task, calls []remote.Call) ([]uint64, []error, error) {
	res := make([]uint64, len(calls))
	errs := make([]error, len(calls))
	per := int(tr.s.Size / ptrace.SeqEntrySize)
	for lo := 0; lo < len(calls); lo += per {
		hi := min(lo+per, len(calls))
		sc := make([]ptrace.SeqCall, hi-lo)
		for i, c := range calls[lo:hi] {
			sc[i] = ptrace.SeqCall{Nr: c.Nr, Args: c.Args}
		}
		tab := make([]byte, len(sc)*ptrace.SeqEntrySize)
		ptrace.PutSeq(tab, sc)
		addr, err := tr.s.Put(0, tab)
		if err != nil {
			return nil, nil, fmt.Errorf("calls in pid %d: %w", t.Tid, err)
		}
		if err := ptrace.EachSeq([]*ptrace.Task{t}, []ptrace.Seq{{Code: tr.r.scratchBase + seqCodeOff, Addr: addr, N: len(sc)}}); err != nil {
			return nil, nil, fmt.Errorf("calls in pid %d: %w", t.Tid, err)
		}
		b, err := tr.s.Get(0, len(tab))
		if err != nil {
			return nil, nil, fmt.Errorf("calls in pid %d: %w", t.Tid, err)
		}
		for i := range sc {
			res[lo+i], errs[lo+i] = ptrace.SeqResult(b, i)
		}
	}
	return res, errs, nil
}
