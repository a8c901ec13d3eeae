package core

import (
	"bytes"
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
	// Comm is the thread's name (prctl(PR_GET_NAME)): asked with the
	// others, it spares reading the thread's /proc stat for it.
	Comm string
}

// Where each thread's answers go in its slot of the scratch memory.
const (
	slotTidAddr  = 0  // 8 bytes
	slotSas      = 8  // stack_t: 24 bytes
	slotPdeath   = 32 // int
	slotName     = 40 // char[16]
	threadSlotSz = 64
)

// AskThreads asks every thread of ts (threads of one process, whose
// scratch s is) for its ThreadCalls (AskThreadsOf).
func AskThreads(ts []*ptrace.Task, s *ptrace.Scratch) ([]ThreadCalls, error) {
	out, err := AskThreadsOf([][]*ptrace.Task{ts}, []*ptrace.Scratch{s}, nil)
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// AskThreadsOf asks the threads of many processes at once (groups[k],
// whose scratch is ss[k]) for their ThreadCalls: a batch takes as many
// threads of each process as its scratch has slots, so that the
// processes of a tree share each batch's round trips, and each thread
// writes into its own slot, read back in one go per process. Where every
// scratch of a batch is executable, each thread runs its five calls as
// one table (ptrace.EachSeq: three ptrace stops for them all); otherwise
// each call is injected into the batch at once (ptrace.Each, two stops
// a call). 10,000 threads take overlapped round trips per batch instead
// of 50,000 one after the other.
//
// before, if set, is called with each process's share of a batch
// (threads lo to hi of groups[k]) before the batch is asked: the dump
// sets each thread's ptrace.Task.NoSeq there from its /proc status.
func AskThreadsOf(groups [][]*ptrace.Task, ss []*ptrace.Scratch, before func(k, lo, hi int)) ([][]ThreadCalls, error) {
	out := make([][]ThreadCalls, len(groups))
	exec := true
	for _, s := range ss {
		exec = exec && s.Exec
	}
	per := func(s *ptrace.Scratch) int {
		if exec {
			if s.Size <= seqCodeRoom {
				return 0
			}
			return min(maxAskBatch, int((s.Size-seqCodeRoom)/seqSlotSz))
		}
		return int(s.Size / threadSlotSz)
	}
	rounds := 0
	for k, ts := range groups {
		out[k] = make([]ThreadCalls, len(ts))
		n := per(ss[k])
		if n == 0 {
			return nil, fmt.Errorf("ask threads: scratch of %d bytes holds no slot of %d", ss[k].Size, threadSlotSz)
		}
		rounds = max(rounds, (len(ts)+n-1)/n)
	}
	for r := 0; r < rounds; r++ {
		var b threadBatch
		for k, ts := range groups {
			n := per(ss[k])
			lo, hi := min(r*n, len(ts)), min((r+1)*n, len(ts))
			if lo == hi {
				continue
			}
			if before != nil {
				before(k, lo, hi)
			}
			b.ts = append(b.ts, ts[lo:hi]...)
			for i := range hi - lo {
				if exec {
					b.slots = append(b.slots, ss[k].Addr+seqCodeRoom+uint64(i)*seqSlotSz)
				} else {
					b.slots = append(b.slots, ss[k].Addr+uint64(i)*threadSlotSz)
				}
			}
			b.reads = append(b.reads, threadRead{s: ss[k], out: out[k][lo:hi]})
		}
		ask := b.ask
		if exec {
			ask = b.askSeq
		}
		if err := ask(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

const (
	// maxAskBatch bounds the threads of a process asked at once: enough
	// to overlap their stops on two CPUs.
	maxAskBatch = 256
	// seqCodeRoom is where ptrace.SeqCode goes, at the start of an
	// executable scratch; seqSlotSz is a thread's slot after it: its
	// call table, then its answers (slot*).
	seqCodeRoom = 64
	seqCalls    = 5
	seqSlotSz   = seqCalls*ptrace.SeqEntrySize + threadSlotSz
)

// ScratchFor is the size of the scratch memory of a process of n
// threads for its task state: room for up to maxAskBatch threads' call
// tables, at least four pages.
func ScratchFor(n int) uint64 {
	const page = 4096
	size := uint64(seqCodeRoom + min(n, maxAskBatch)*seqSlotSz)
	return max(4*page, (size+page-1)&^(page-1))
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
		{"comm", "prctl(PR_GET_NAME)", unix.SYS_PRCTL,
			func(i int) []uint64 { return []uint64{unix.PR_GET_NAME, slot(i, slotName)} }, nil},
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
	n := 0
	for _, rd := range b.reads {
		buf, err := rd.s.Get(0, len(rd.out)*threadSlotSz)
		if err != nil {
			return fmt.Errorf("dump the injected calls' answers of pid %d: %w", rd.s.Pid, err)
		}
		for i := range rd.out {
			decodeAnswers(buf[i*threadSlotSz:], &rd.out[i])
			rd.out[i].Securebits = secbits[n]
			n++
		}
	}
	return nil
}

// askSeq asks a batch with one call table per thread (ptrace.EachSeq):
// each process's code and tables go into its scratch in one write, the
// answers come back in one read.
func (b *threadBatch) askSeq() error {
	seqs := make([]ptrace.Seq, 0, len(b.ts))
	bufs := make([][]byte, len(b.reads))
	t := 0
	for r, rd := range b.reads {
		buf := make([]byte, seqCodeRoom+len(rd.out)*seqSlotSz)
		copy(buf, ptrace.SeqCode)
		for i := range rd.out {
			off := seqCodeRoom + i*seqSlotSz
			ans := rd.s.Addr + uint64(off+seqCalls*ptrace.SeqEntrySize)
			ptrace.PutSeq(buf[off:], []ptrace.SeqCall{
				{Nr: unix.SYS_PRCTL, Args: [6]uint64{unix.PR_GET_TID_ADDRESS, ans + slotTidAddr}},
				{Nr: unix.SYS_SIGALTSTACK, Args: [6]uint64{0, ans + slotSas}},
				{Nr: unix.SYS_PRCTL, Args: [6]uint64{unix.PR_GET_PDEATHSIG, ans + slotPdeath}},
				{Nr: unix.SYS_PRCTL, Args: [6]uint64{unix.PR_GET_SECUREBITS}},
				{Nr: unix.SYS_PRCTL, Args: [6]uint64{unix.PR_GET_NAME, ans + slotName}},
			})
			seqs = append(seqs, ptrace.Seq{Code: rd.s.Addr, Addr: rd.s.Addr + uint64(off), N: seqCalls})
			t++
		}
		if _, err := rd.s.Put(0, buf); err != nil {
			return fmt.Errorf("dump the threads of pid %d: %w", rd.s.Pid, err)
		}
		bufs[r] = buf
	}
	if err := ptrace.EachSeq(b.ts, seqs); err != nil {
		return fmt.Errorf("dump the threads of %d processes: %w", len(b.reads), err)
	}
	what := [seqCalls][2]string{
		{"clear_child_tid", "prctl(PR_GET_TID_ADDRESS)"},
		{"sigaltstack", "sigaltstack"},
		{"pdeath_signal", "prctl(PR_GET_PDEATHSIG)"},
		{"credentials", "prctl(PR_GET_SECUREBITS)"},
		{"comm", "prctl(PR_GET_NAME)"},
	}
	t = 0
	for r, rd := range b.reads {
		buf, err := rd.s.Get(0, len(bufs[r]))
		if err != nil {
			return fmt.Errorf("dump the injected calls' answers of pid %d: %w", rd.s.Pid, err)
		}
		for i := range rd.out {
			tab := buf[seqCodeRoom+i*seqSlotSz:]
			for k := range seqCalls {
				v, err := ptrace.SeqResult(tab, k)
				if err != nil {
					return fmt.Errorf("dump %s of tid %d: %s in pid %d: %w", what[k][0], b.ts[t].Tid, what[k][1], b.ts[t].Tid, err)
				}
				if k == 3 {
					rd.out[i].Securebits = uint32(v)
				}
			}
			decodeAnswers(tab[seqCalls*ptrace.SeqEntrySize:], &rd.out[i])
			t++
		}
	}
	return nil
}

// decodeAnswers fills c from a thread's answers slot.
func decodeAnswers(sl []byte, c *ThreadCalls) {
	le := binary.LittleEndian
	c.ClearTid = le.Uint64(sl[slotTidAddr:])
	c.Sas = &criucore.ThreadSasEntry{
		SsSp:    proto.Uint64(le.Uint64(sl[slotSas:])),
		SsFlags: proto.Uint32(le.Uint32(sl[slotSas+8:])),
		SsSize:  proto.Uint64(le.Uint64(sl[slotSas+16:])),
	}
	c.PdeathSig = le.Uint32(sl[slotPdeath:])
	name := sl[slotName : slotName+16]
	if n := bytes.IndexByte(name, 0); n >= 0 {
		name = name[:n]
	}
	c.Comm = string(name)
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
// first), p the process's task, whose scratch holds the arguments. With
// code, the address of ptrace.SeqCode in the process, each thread makes
// its calls as one table (ptrace.EachSeq: one ptrace stop for them all);
// 0 injects them one call at a time. RestoreThreadRest does the rest of
// RestoreThread.
func RestoreThreadCalls(p remote.Task, ts []*ptrace.Task, cores []*criucore.CoreEntry, code uint64) error {
	batch, restore := restoreBatch, restoreBatchCalls
	if code != 0 {
		batch, restore = restoreSeqBatch, func(p remote.Task, ts []*ptrace.Task, cores []*criucore.CoreEntry) error {
			return restoreSeq(p, ts, cores, code)
		}
	}
	for lo := 0; lo < len(ts); lo += batch {
		hi := min(lo+batch, len(ts))
		if err := restore(p, ts[lo:hi], cores[lo:hi]); err != nil {
			return err
		}
	}
	return nil
}

// threadCall is one call RestoreThreadCalls makes in a thread.
type threadCall struct {
	name, what string
	nr         uintptr
	want       func(ce *criucore.CoreEntry) bool
	// args takes the address of the thread's name and sigaltstack
	// arguments in the scratch memory.
	args func(ce *criucore.CoreEntry, name, sas uint64) []uint64
}

var threadCalls = []threadCall{
	{"robust list", "set_robust_list", unix.SYS_SET_ROBUST_LIST,
		func(ce *criucore.CoreEntry) bool { return ce.GetThreadCore().GetFutexRla() != 0 },
		func(ce *criucore.CoreEntry, _, _ uint64) []uint64 {
			return []uint64{ce.GetThreadCore().GetFutexRla(), uint64(ce.GetThreadCore().GetFutexRlaLen())}
		}},
	{"clear_child_tid", "set_tid_address", unix.SYS_SET_TID_ADDRESS,
		func(*criucore.CoreEntry) bool { return true },
		func(ce *criucore.CoreEntry, _, _ uint64) []uint64 {
			return []uint64{ce.GetThreadInfo().GetClearTidAddr()}
		}},
	{"comm", "prctl(PR_SET_NAME)", unix.SYS_PRCTL,
		func(*criucore.CoreEntry) bool { return true },
		func(_ *criucore.CoreEntry, name, _ uint64) []uint64 { return []uint64{unix.PR_SET_NAME, name} }},
	{"sigaltstack", "sigaltstack", unix.SYS_SIGALTSTACK, wantSas,
		func(_ *criucore.CoreEntry, _, sas uint64) []uint64 { return []uint64{sas, 0} }},
	{"rseq", "rseq", unix.SYS_RSEQ, wantRseq,
		func(ce *criucore.CoreEntry, _, _ uint64) []uint64 {
			r := ce.GetThreadCore().GetRseqEntry()
			return []uint64{r.GetRseqAbiPointer(), uint64(r.GetRseqAbiSize()), 0, uint64(r.GetSignature())}
		}},
	{"pdeath_signal", "prctl(PR_SET_PDEATHSIG)", unix.SYS_PRCTL,
		// A new task has none.
		func(ce *criucore.CoreEntry) bool { return ce.GetThreadCore().GetPdeathSig() != 0 },
		func(ce *criucore.CoreEntry, _, _ uint64) []uint64 {
			return []uint64{unix.PR_SET_PDEATHSIG, uint64(ce.GetThreadCore().GetPdeathSig())}
		}},
}

// threadArgs lays out the name and sigaltstack arguments of the threads
// of cores, restSlotSz bytes each.
func threadArgs(cores []*criucore.CoreEntry) []byte {
	args := make([]byte, restSlotSz*len(cores))
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
	return args
}

// restoreSeqBatch is how many threads restoreSeq handles at once: each
// takes its arguments and a table of up to six calls in the scratch
// memory (15 pages in a restore).
const restoreSeqBatch = 128

// restoreSeq makes the calls of a batch of threads with one call table
// each (ptrace.EachSeq).
func restoreSeq(p remote.Task, ts []*ptrace.Task, cores []*criucore.CoreEntry, code uint64) error {
	args := threadArgs(cores)
	base, err := p.Put(0, args)
	if err != nil {
		return fmt.Errorf("restore the names of the threads of pid %d: %w", p.HostPid(), err)
	}
	tabOff := uint64(len(args))
	var tabs []byte
	seqs := make([]ptrace.Seq, len(ts))
	made := make([][]int, len(ts)) // the threadCalls each thread makes
	for i, ce := range cores {
		name, sas := base+uint64(restSlotSz*i)+restSlotName, base+uint64(restSlotSz*i)+restSlotSas
		var calls []ptrace.SeqCall
		for k, c := range threadCalls {
			if !c.want(ce) {
				continue
			}
			sc := ptrace.SeqCall{Nr: c.nr}
			copy(sc.Args[:], c.args(ce, name, sas))
			calls = append(calls, sc)
			made[i] = append(made[i], k)
		}
		seqs[i] = ptrace.Seq{Code: code, Addr: base + tabOff + uint64(len(tabs)), N: len(calls)}
		tab := make([]byte, len(calls)*ptrace.SeqEntrySize)
		ptrace.PutSeq(tab, calls)
		tabs = append(tabs, tab...)
	}
	if _, err := p.Put(tabOff, tabs); err != nil {
		return fmt.Errorf("restore the threads of pid %d: %w", p.HostPid(), err)
	}
	if err := ptrace.EachSeq(ts, seqs); err != nil {
		return fmt.Errorf("restore the threads of pid %d: %w", p.HostPid(), err)
	}
	b, err := p.Get(tabOff, len(tabs))
	if err != nil {
		return fmt.Errorf("restore the threads of pid %d: %w", p.HostPid(), err)
	}
	for i := range ts {
		tab := b[seqs[i].Addr-base-tabOff:]
		for j, k := range made[i] {
			if _, err := ptrace.SeqResult(tab, j); err != nil {
				c := threadCalls[k]
				return fmt.Errorf("restore %s of tid %d: %s in pid %d: %w", c.name, ts[i].Tid, c.what, ts[i].Tid, err)
			}
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
	base, err := p.Put(0, threadArgs(cores))
	if err != nil {
		return fmt.Errorf("restore the names of the threads of pid %d: %w", p.HostPid(), err)
	}
	slot := func(i int, off uint64) uint64 { return base + uint64(restSlotSz*i) + off }
	for _, c := range threadCalls {
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
		_, errs, err := ptrace.Each(sub, c.nr, func(j int) []uint64 {
			i := idx[j]
			return c.args(cores[i], slot(i, restSlotName), slot(i, restSlotSas))
		})
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
