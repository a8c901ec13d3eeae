package core

import (
	"encoding/binary"
	"fmt"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/remote"
)

// ThreadCalls is what a dump learns of one thread by injecting calls
// into it: no /proc file nor ptrace request shows these per-thread
// values (criu's parasite asks them from inside the thread).
type ThreadCalls struct {
	ClearTid   uint64 // prctl(PR_GET_TID_ADDRESS)
	Sas        *criucore.ThreadSasEntry
	PdeathSig  uint32 // prctl(PR_GET_PDEATHSIG)
	Securebits uint32 // prctl(PR_GET_SECUREBITS)
}

// Where each thread's answers go in its slot of the scratch memory.
const (
	slotTidAddr  = 0  // 8 bytes
	slotSas      = 8  // stack_t: 24 bytes
	slotPdeath   = 32 // int
	threadSlotSz = 64
)

// AskThreads asks every thread of ts (threads of one process, whose
// scratch s is) for its ThreadCalls. Each call is injected into a batch
// of threads at once (ptrace.Each), each thread writing into its own
// slot of s, read back in one go: 10,000 threads take four overlapped
// round trips per batch instead of 40,000 one after the other.
func AskThreads(ts []*ptrace.Task, s *ptrace.Scratch) ([]ThreadCalls, error) {
	out, err := AskThreadsOf([][]*ptrace.Task{ts}, []*ptrace.Scratch{s})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// AskThreadsOf is AskThreads for the threads of many processes at once
// (groups[k], whose scratch is ss[k]): a batch takes as many threads of
// each process as its scratch has slots, so that the processes of a tree
// share each batch's round trips.
func AskThreadsOf(groups [][]*ptrace.Task, ss []*ptrace.Scratch) ([][]ThreadCalls, error) {
	out := make([][]ThreadCalls, len(groups))
	rounds := 0
	for k, ts := range groups {
		out[k] = make([]ThreadCalls, len(ts))
		per := int(ss[k].Size / threadSlotSz)
		if per == 0 {
			return nil, fmt.Errorf("ask threads: scratch of %d bytes holds no slot of %d", ss[k].Size, threadSlotSz)
		}
		rounds = max(rounds, (len(ts)+per-1)/per)
	}
	for r := 0; r < rounds; r++ {
		var b threadBatch
		for k, ts := range groups {
			per := int(ss[k].Size / threadSlotSz)
			lo, hi := min(r*per, len(ts)), min((r+1)*per, len(ts))
			if lo == hi {
				continue
			}
			b.ts = append(b.ts, ts[lo:hi]...)
			for i := range hi - lo {
				b.slots = append(b.slots, ss[k].Addr+uint64(i)*threadSlotSz)
			}
			b.reads = append(b.reads, threadRead{s: ss[k], out: out[k][lo:hi]})
		}
		if err := b.ask(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// threadBatch is one batch of AskThreadsOf: its threads, the address of
// each one's slot, and where each process's slots are read back to.
type threadBatch struct {
	ts    []*ptrace.Task
	slots []uint64
	reads []threadRead
}

// threadRead is the answers of the first len(out) slots of s.
type threadRead struct {
	s   *ptrace.Scratch
	out []ThreadCalls
}

func (b *threadBatch) ask() error {
	ts := b.ts
	slot := func(i int, off uint64) uint64 { return b.slots[i] + off }
	secbits := make([]uint32, len(ts))
	calls := []struct {
		name, what string
		nr         uintptr
		args       func(i int) []uint64
		keep       func(i int, r uint64)
	}{
		{"clear_child_tid", "prctl(PR_GET_TID_ADDRESS)", unix.SYS_PRCTL,
			func(i int) []uint64 { return []uint64{unix.PR_GET_TID_ADDRESS, slot(i, slotTidAddr)} }, nil},
		{"sigaltstack", "sigaltstack", unix.SYS_SIGALTSTACK,
			func(i int) []uint64 { return []uint64{0, slot(i, slotSas)} }, nil},
		{"pdeath_signal", "prctl(PR_GET_PDEATHSIG)", unix.SYS_PRCTL,
			func(i int) []uint64 { return []uint64{unix.PR_GET_PDEATHSIG, slot(i, slotPdeath)} }, nil},
		{"credentials", "prctl(PR_GET_SECUREBITS)", unix.SYS_PRCTL,
			func(int) []uint64 { return []uint64{unix.PR_GET_SECUREBITS} },
			func(i int, r uint64) { secbits[i] = uint32(r) }},
	}
	for _, c := range calls {
		res, errs, err := ptrace.Each(ts, c.nr, c.args)
		if err != nil && len(b.reads) == 1 {
			return fmt.Errorf("dump %s of the threads of pid %d: %w", c.name, ts[0].Tgid(), err)
		}
		if err != nil { // (Each's error names each task)
			return fmt.Errorf("dump %s of the threads of %d processes: %w", c.name, len(b.reads), err)
		}
		for i, e := range errs {
			if e != nil {
				return fmt.Errorf("dump %s of tid %d: %s in pid %d: %w", c.name, ts[i].Tid, c.what, ts[i].Tid, e)
			}
			if c.keep != nil {
				c.keep(i, res[i])
			}
		}
	}
	le := binary.LittleEndian
	n := 0
	for _, rd := range b.reads {
		buf, err := rd.s.Get(0, len(rd.out)*threadSlotSz)
		if err != nil {
			return fmt.Errorf("dump the injected calls' answers of pid %d: %w", rd.s.Pid, err)
		}
		for i := range rd.out {
			sl := buf[i*threadSlotSz:]
			rd.out[i].ClearTid = le.Uint64(sl[slotTidAddr:])
			rd.out[i].Sas = &criucore.ThreadSasEntry{
				SsSp:    proto.Uint64(le.Uint64(sl[slotSas:])),
				SsFlags: proto.Uint32(le.Uint32(sl[slotSas+8:])),
				SsSize:  proto.Uint64(le.Uint64(sl[slotSas+16:])),
			}
			rd.out[i].PdeathSig = le.Uint32(sl[slotPdeath:])
			rd.out[i].Securebits = secbits[n]
			n++
		}
	}
	return nil
}

// restoreBatch is how many threads RestoreThreadCalls handles at once:
// each takes a slot of the process's scratch memory for its name and its
// sigaltstack.
const restoreBatch = 256

// Where each thread's arguments go in its slot of the scratch memory.
const (
	restSlotName = 0  // comm: 16 bytes
	restSlotSas  = 16 // stack_t: 24 bytes
	restSlotSz   = 40
)

// RestoreThreadCalls makes, in every thread of a process at once
// (ptrace.Each), the calls RestoreThread would inject into each in turn:
// set_robust_list, set_tid_address, PR_SET_NAME, rseq, sigaltstack and
// PR_SET_PDEATHSIG (the last three only where the image has them). ts
// and cores are the process's threads and their core entries (leader
// first), p the process's task, whose scratch holds the arguments.
// RestoreThreadRest does the rest of RestoreThread.
func RestoreThreadCalls(p remote.Task, ts []*ptrace.Task, cores []*criucore.CoreEntry) error {
	for lo := 0; lo < len(ts); lo += restoreBatch {
		hi := min(lo+restoreBatch, len(ts))
		if err := restoreBatchCalls(p, ts[lo:hi], cores[lo:hi]); err != nil {
			return err
		}
	}
	return nil
}

// wantSas tells whether a thread's image has a sigaltstack to restore.
func wantSas(ce *criucore.CoreEntry) bool {
	sas := ce.GetThreadCore().GetSas()
	return sas != nil && sas.GetSsFlags()&ssDisable == 0
}

// wantRseq tells whether a thread's image has an rseq area to register.
func wantRseq(ce *criucore.CoreEntry) bool {
	r := ce.GetThreadCore().GetRseqEntry()
	return r != nil && r.GetRseqAbiPointer() != 0
}

func restoreBatchCalls(p remote.Task, ts []*ptrace.Task, cores []*criucore.CoreEntry) error {
	args := make([]byte, restSlotSz*len(ts))
	le := binary.LittleEndian
	for i, ce := range cores {
		sl := args[restSlotSz*i:]
		name := ce.GetThreadCore().GetComm()
		if name == "" {
			name = ce.GetTc().GetComm()
		}
		copy(sl[restSlotName:restSlotName+15], name)
		if wantSas(ce) {
			sas := ce.GetThreadCore().GetSas()
			le.PutUint64(sl[restSlotSas:], sas.GetSsSp())
			le.PutUint32(sl[restSlotSas+8:], sas.GetSsFlags()&^ssOnstack)
			le.PutUint64(sl[restSlotSas+16:], sas.GetSsSize())
		}
	}
	base, err := p.Put(0, args)
	if err != nil {
		return fmt.Errorf("restore the names of the threads of pid %d: %w", p.HostPid(), err)
	}
	slot := func(i int, off uint64) uint64 { return base + uint64(restSlotSz*i) + off }
	calls := []struct {
		name, what string
		nr         uintptr
		want       func(ce *criucore.CoreEntry) bool
		args       func(i int, ce *criucore.CoreEntry) []uint64
	}{
		{"robust list", "set_robust_list", unix.SYS_SET_ROBUST_LIST,
			func(ce *criucore.CoreEntry) bool { return ce.GetThreadCore().GetFutexRla() != 0 },
			func(_ int, ce *criucore.CoreEntry) []uint64 {
				return []uint64{ce.GetThreadCore().GetFutexRla(), uint64(ce.GetThreadCore().GetFutexRlaLen())}
			}},
		{"clear_child_tid", "set_tid_address", unix.SYS_SET_TID_ADDRESS,
			func(*criucore.CoreEntry) bool { return true },
			func(_ int, ce *criucore.CoreEntry) []uint64 { return []uint64{ce.GetThreadInfo().GetClearTidAddr()} }},
		{"comm", "prctl(PR_SET_NAME)", unix.SYS_PRCTL,
			func(*criucore.CoreEntry) bool { return true },
			func(i int, _ *criucore.CoreEntry) []uint64 { return []uint64{unix.PR_SET_NAME, slot(i, restSlotName)} }},
		{"sigaltstack", "sigaltstack", unix.SYS_SIGALTSTACK, wantSas,
			func(i int, _ *criucore.CoreEntry) []uint64 { return []uint64{slot(i, restSlotSas), 0} }},
		{"rseq", "rseq", unix.SYS_RSEQ, wantRseq,
			func(_ int, ce *criucore.CoreEntry) []uint64 {
				r := ce.GetThreadCore().GetRseqEntry()
				return []uint64{r.GetRseqAbiPointer(), uint64(r.GetRseqAbiSize()), 0, uint64(r.GetSignature())}
			}},
		{"pdeath_signal", "prctl(PR_SET_PDEATHSIG)", unix.SYS_PRCTL,
			// A new task has none.
			func(ce *criucore.CoreEntry) bool { return ce.GetThreadCore().GetPdeathSig() != 0 },
			func(_ int, ce *criucore.CoreEntry) []uint64 {
				return []uint64{unix.PR_SET_PDEATHSIG, uint64(ce.GetThreadCore().GetPdeathSig())}
			}},
	}
	for _, c := range calls {
		var sub []*ptrace.Task
		var idx []int
		for i, ce := range cores {
			if c.want(ce) {
				sub, idx = append(sub, ts[i]), append(idx, i)
			}
		}
		if len(sub) == 0 {
			continue
		}
		_, errs, err := ptrace.Each(sub, c.nr, func(j int) []uint64 { return c.args(idx[j], cores[idx[j]]) })
		if err != nil {
			return fmt.Errorf("restore %s of the threads of pid %d: %w", c.name, p.HostPid(), err)
		}
		for j, e := range errs {
			if e != nil {
				return fmt.Errorf("restore %s of tid %d: %s in pid %d: %w", c.name, sub[j].Tid, c.what, sub[j].Tid, e)
			}
		}
	}
	return nil
}
