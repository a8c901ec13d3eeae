package core

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/seccomp"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/remote"
)

// Seccomp ABI (include/uapi/linux/filter.h, seccomp.h).
const (
	sockFilterSize = 8  // struct sock_filter {u16 code; u8 jt, jf; u32 k}
	sockFprogSize  = 16 // struct sock_fprog {u16 len; pad; u64 filter}
)

// SeccompTable is the seccomp.img of one dump: the filters of every
// thread, written as one SeccompEntry{SeccompFilters: Filters}.
//
// criu's representation (criu/seccomp.c, dump_seccomp_filters and
// seccomp_prepare_threads): thread_core.seccomp_filter is the 0-based
// index of the thread's FIRST installed (oldest) filter, and each
// filter's prev, when present, is the index of the filter installed
// right after it; the newest has no prev. Restore installs the filters
// in that link order. (The name "prev" comes from criu's dump walk,
// which goes from the newest, PTRACE_SECCOMP_GET_FILTER's highest
// index, to the oldest, its index 0.)
//
// Threads and processes with identical chains (a child forked after its
// parent installed its filters, threads synchronised with TSYNC) share
// their table entries: an entry is reused when its bytes, flags and
// successor are the same.
type SeccompTable struct {
	Filters []*seccomp.SeccompFilter

	index map[string]uint32 // filterKey -> position in Filters
}

// seccompFilter is one filter of a chain as read from the kernel.
type seccompFilter struct {
	prog  []byte // raw struct sock_filter array
	flags uint32 // SECCOMP_FILTER_FLAG_* from PTRACE_SECCOMP_GET_METADATA
}

// DumpThread records the seccomp state of the stopped thread tid, whose
// /proc status "Seccomp:" field is mode. It returns the thread_core
// seccomp_mode and, for SECCOMP_MODE_FILTER, seccomp_filter: the index of
// the thread's first filter in st.Filters (0 is a valid index: set
// ThreadCoreEntry.SeccompFilter only when the mode is filter, as criu
// sets has_seccomp_filter).
//
// Threads of one process should go through DumpProcess instead, which
// also applies criu's TSYNC convention.
func (st *SeccompTable) DumpThread(tid int, mode int) (criucore.SeccompMode, uint32, error) {
	m, err := seccompMode(tid, mode)
	if err != nil || m != criucore.SeccompMode_filter {
		return m, 0, err
	}
	chain, err := readSeccompChain(tid)
	if err != nil {
		return 0, 0, err
	}
	return m, st.add(chain), nil
}

// DumpProcess records the seccomp state of every thread of one process,
// tids[0] being the leader and modes[i] the "Seccomp:" field of tids[i].
//
// When every thread has the same chain as the leader, it does what criu's
// try_use_tsync does: the leader's filters get SECCOMP_FILTER_FLAG_TSYNC
// and the other threads are written with mode disabled, so that the
// leader's restore installs the chain in all threads at once. Otherwise
// the task could not use TSYNC any more after a restore: separately
// installed filters are not each other's ancestors, and the kernel
// refuses to synchronise such threads.
func (st *SeccompTable) DumpProcess(tids []int, modes []int) ([]criucore.SeccompMode, []uint32, error) {
	if len(tids) != len(modes) || len(tids) == 0 {
		return nil, nil, fmt.Errorf("seccomp of %d threads with %d modes", len(tids), len(modes))
	}
	chains := make([][]seccompFilter, len(tids))
	outModes := make([]criucore.SeccompMode, len(tids))
	for i, tid := range tids {
		m, err := seccompMode(tid, modes[i])
		if err != nil {
			return nil, nil, err
		}
		outModes[i] = m
		if m != criucore.SeccompMode_filter {
			continue
		}
		if chains[i], err = readSeccompChain(tid); err != nil {
			return nil, nil, err
		}
	}
	if tsyncable(outModes, chains) {
		for i := range chains[0] {
			chains[0][i].flags |= unix.SECCOMP_FILTER_FLAG_TSYNC
		}
		for i := 1; i < len(tids); i++ {
			outModes[i], chains[i] = criucore.SeccompMode_disabled, nil
		}
	}
	idx := make([]uint32, len(tids))
	for i, chain := range chains {
		if outModes[i] == criucore.SeccompMode_filter {
			idx[i] = st.add(chain)
		}
	}
	return outModes, idx, nil
}

// tsyncable reports whether all threads have the leader's filter chain.
func tsyncable(modes []criucore.SeccompMode, chains [][]seccompFilter) bool {
	if modes[0] != criucore.SeccompMode_filter {
		return false
	}
	for i := 1; i < len(chains); i++ {
		if modes[i] != criucore.SeccompMode_filter || len(chains[i]) != len(chains[0]) {
			return false
		}
		for j := range chains[i] {
			if !bytes.Equal(chains[i][j].prog, chains[0][j].prog) {
				return false
			}
		}
	}
	return true
}

// Entry is the seccomp.img entry.
func (st *SeccompTable) Entry() *seccomp.SeccompEntry {
	return &seccomp.SeccompEntry{SeccompFilters: st.Filters}
}

func seccompMode(tid, mode int) (criucore.SeccompMode, error) {
	switch mode {
	case 0:
		return criucore.SeccompMode_disabled, nil
	case unix.SECCOMP_MODE_STRICT:
		return criucore.SeccompMode_strict, nil
	case 2: // SECCOMP_MODE_FILTER
		return criucore.SeccompMode_filter, nil
	}
	return 0, fmt.Errorf("seccomp mode %d of tid %d: unknown", mode, tid)
}

// add stores a chain (oldest filter first) and returns the index of its
// first filter. Entries are made from the newest filter back, since an
// entry names its successor.
func (st *SeccompTable) add(chain []seccompFilter) uint32 {
	if st.index == nil {
		st.index = make(map[string]uint32)
		for i, f := range st.Filters { // a table filled by someone else
			st.index[filterKey(f.GetFilter(), f.GetFlags(), f.Prev)] = uint32(i)
		}
	}
	var next *uint32
	for i := len(chain) - 1; i >= 0; i-- {
		key := filterKey(chain[i].prog, chain[i].flags, next)
		pos, ok := st.index[key]
		if !ok {
			pos = uint32(len(st.Filters))
			f := &seccomp.SeccompFilter{Filter: chain[i].prog, Flags: proto.Uint32(chain[i].flags)}
			if next != nil {
				f.Prev = proto.Uint32(*next)
			}
			st.Filters = append(st.Filters, f)
			st.index[key] = pos
		}
		next = &pos
	}
	return *next
}

func filterKey(prog []byte, flags uint32, next *uint32) string {
	n := "-"
	if next != nil {
		n = strconv.FormatUint(uint64(*next), 10)
	}
	// The length first and the bytes last keep the key unambiguous.
	return fmt.Sprintf("%d/%d/%s/%s", len(prog), flags, n, prog)
}

// readSeccompChain reads the filters of a stopped thread, oldest first:
// PTRACE_SECCOMP_GET_FILTER's index 0 is the first filter the thread
// installed (or inherited), and the last index the most recent one.
func readSeccompChain(tid int) ([]seccompFilter, error) {
	buf := make([]byte, unix.BPF_MAXINSNS*sockFilterSize)
	var chain []seccompFilter
	for i := 0; ; i++ {
		n, err := ptrace.SeccompFilter(tid, i, buf)
		if errors.Is(err, unix.ENOENT) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("seccomp filter %d of tid %d: %w", i, tid, err)
		}
		if n <= 0 || n > unix.BPF_MAXINSNS {
			return nil, fmt.Errorf("seccomp filter %d of tid %d: %d instructions", i, tid, n)
		}
		flags, err := seccompFlags(tid, i)
		if err != nil {
			return nil, err
		}
		prog := append([]byte(nil), buf[:n*sockFilterSize]...)
		chain = append(chain, seccompFilter{prog: prog, flags: flags})
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("seccomp of tid %d: filter mode without filters", tid)
	}
	return chain, nil
}

// seccompFlags returns the flags the filter was installed with, as far as
// the kernel keeps them (SECCOMP_FILTER_FLAG_LOG).
func seccompFlags(tid, i int) (uint32, error) {
	md, err := ptrace.GetSeccompMetadata(tid, i)
	if errors.Is(err, unix.EIO) { // kernel without the request
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("seccomp filter %d of tid %d: %w", i, tid, err)
	}
	return uint32(md.Flags), nil
}

// SeccompChain returns the filters of a thread in the order they must be
// installed, checking the image's indexes and sizes, so that a damaged
// seccomp.img is refused before any task is created.
func SeccompChain(filters []*seccomp.SeccompFilter, mode criucore.SeccompMode, index uint32) ([]*seccomp.SeccompFilter, error) {
	switch mode {
	case criucore.SeccompMode_disabled, criucore.SeccompMode_strict:
		return nil, nil
	case criucore.SeccompMode_filter:
	default:
		return nil, fmt.Errorf("seccomp mode %d: unknown", mode)
	}
	var chain []*seccomp.SeccompFilter
	for i := &index; i != nil; i = filters[*i].Prev {
		if *i >= uint32(len(filters)) {
			return nil, fmt.Errorf("seccomp filter index %d: table has %d filters", *i, len(filters))
		}
		if len(chain) == len(filters) {
			return nil, fmt.Errorf("seccomp filter %d: the chain loops", index)
		}
		f := filters[*i]
		if n := len(f.GetFilter()); n == 0 || n%sockFilterSize != 0 || n > unix.BPF_MAXINSNS*sockFilterSize {
			return nil, fmt.Errorf("seccomp filter %d: %d bytes", *i, n)
		}
		chain = append(chain, f)
	}
	return chain, nil
}

// RestoreSeccomp puts a thread into its dumped seccomp mode: strict mode
// by prctl(PR_SET_SECCOMP), or the filter chain starting at index, oldest
// first, each by seccomp(SECCOMP_SET_MODE_FILTER, flags, &sock_fprog).
// A filter needs no_new_privs or CAP_SYS_ADMIN in the thread.
//
// It must come after everything else stasis injects into the thread, just
// before the registers are set: from here on the filter (or strict mode,
// which allows only read, write, exit and sigreturn) also applies to the
// injected calls, and one it denies fails, or kills the thread.
//
// The exception is a tracee with PTRACE_O_SUSPEND_SECCOMP (criu sets it on
// restored tasks): nothing is filtered while it is traced, and the option
// ends with the detach. With it, this may run before restoreCreds, which
// is then the right order (criu's): a task that installed its filters as
// root and dropped CAP_SYS_ADMIN later without no_new_privs (runc without
// noNewPrivileges) can only get them back while the thread is still root.
func RestoreSeccomp(t remote.Task, filters []*seccomp.SeccompFilter, mode criucore.SeccompMode, index uint32) error {
	chain, err := SeccompChain(filters, mode, index)
	if err != nil {
		return fmt.Errorf("seccomp of tid %d: %w", t.HostPid(), err)
	}
	if mode == criucore.SeccompMode_strict {
		_, err := t.Call("prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)", unix.SYS_PRCTL, unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_STRICT)
		return err
	}
	pos := index
	for _, f := range chain {
		if err := installFilter(t, f); err != nil {
			return fmt.Errorf("seccomp filter %d of tid %d: %w", pos, t.HostPid(), err)
		}
		pos = f.GetPrev()
	}
	return nil
}

func installFilter(t remote.Task, f *seccomp.SeccompFilter) error {
	prog := f.GetFilter()
	progAddr, err := t.Put(sockFprogSize, prog)
	if err != nil {
		return err
	}
	fprog := make([]byte, sockFprogSize)
	binary.LittleEndian.PutUint16(fprog[0:], uint16(len(prog)/sockFilterSize))
	binary.LittleEndian.PutUint64(fprog[8:], progAddr)
	a, err := t.Put(0, fprog)
	if err != nil {
		return err
	}
	_, err = t.Call(fmt.Sprintf("seccomp(SECCOMP_SET_MODE_FILTER, %#x)", f.GetFlags()), unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, uint64(f.GetFlags()), a)
	return err
}
