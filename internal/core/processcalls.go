package core

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/criu-sa"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timer"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// ProcessCalls is what a dump learns of a process by injecting calls
// into one of its threads (the leader): no /proc file nor ptrace request
// shows these process-wide values.
type ProcessCalls struct {
	Personality    uint32
	Sigactions     []*criu_sa.SaEntry // every signal but SIGKILL and SIGSTOP, in criu's order
	Itimers        *timer.TaskTimersEntry
	ChildSubreaper bool
	Membarrier     uint32 // MEMBARRIER_CMD_GET_REGISTRATIONS, 0 where the kernel cannot tell
}

// Where a process's answers go in its scratch memory.
const (
	slotSubreaper  = 0                  // int
	slotItimers    = 8                  // 3 struct itimerval, 32 bytes each
	slotSigactions = slotItimers + 3*32 // a kernel struct sigaction per signal
	procSlotSz     = slotSigactions + sigMax*kernelSigaSize
)

// AskProcesses asks the process of each task of ts (one thread of each
// process, its scratch memory in ss) for its ProcessCalls; handled[i] is
// the mask of the signals process i catches or ignores (SigCgt|SigIgn).
// Each call is injected into every process at once (ptrace.Each), each
// writing into its own scratch, read back once per process: the calls'
// round trips overlap, a tree of 50 processes takes a handful of
// overlapped round trips per call instead of one after the other.
//
// Only the signals a process catches or ignores, and SIGCHLD
// (SA_NOCLDWAIT/SA_NOCLDSTOP matter with SIG_DFL), are asked with an
// injected rt_sigaction: the others are at their defaults, and each
// injection costs tens of microseconds.
func AskProcesses(ts []*ptrace.Task, ss []*ptrace.Scratch, handled []uint64) ([]ProcessCalls, error) {
	out := make([]ProcessCalls, len(ts))
	for i, s := range ss {
		if s.Size < procSlotSz {
			return nil, fmt.Errorf("ask pid %d: scratch of %d bytes, %d needed", ts[i].Tid, s.Size, procSlotSz)
		}
	}
	all := func(int) bool { return true }
	each := func(name, what string, want func(i int) bool, nr uintptr, args func(i int) []uint64, keep func(i int, r uint64)) error {
		var sub []*ptrace.Task
		var idx []int
		for i := range ts {
			if want(i) {
				sub, idx = append(sub, ts[i]), append(idx, i)
			}
		}
		if len(sub) == 0 {
			return nil
		}
		res, errs, err := ptrace.Each(sub, nr, func(j int) []uint64 { return args(idx[j]) })
		if err != nil {
			return fmt.Errorf("dump %s: %w", name, err)
		}
		for j, e := range errs {
			i := idx[j]
			if errors.Is(e, unix.EINVAL) && nr == unix.SYS_MEMBARRIER {
				continue // a kernel before 6.3 cannot tell
			}
			if e != nil {
				return fmt.Errorf("dump %s of pid %d: %s: %w", name, ts[i].Tid, what, e)
			}
			if keep != nil {
				keep(i, res[j])
			}
		}
		return nil
	}
	if err := each("personality", "personality", all, unix.SYS_PERSONALITY,
		func(int) []uint64 { return []uint64{0xffffffff} },
		func(i int, r uint64) { out[i].Personality = uint32(r) }); err != nil {
		return nil, err
	}
	for sig := 1; sig <= sigMax; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		bit := uint64(1) << (sig - 1)
		err := each("sigactions", fmt.Sprintf("rt_sigaction(%d)", sig),
			func(i int) bool { return handled[i]&bit != 0 || sig == int(unix.SIGCHLD) }, unix.SYS_RT_SIGACTION,
			func(i int) []uint64 {
				return []uint64{uint64(sig), 0, ss[i].Addr + slotSigactions + uint64(sig-1)*kernelSigaSize, 8}
			}, nil)
		if err != nil {
			return nil, err
		}
	}
	for which := uint64(0); which < 3; which++ {
		if err := each("itimers", fmt.Sprintf("getitimer(%d)", which), all, unix.SYS_GETITIMER,
			func(i int) []uint64 { return []uint64{which, ss[i].Addr + slotItimers + which*32} }, nil); err != nil {
			return nil, err
		}
	}
	if err := each("child_subreaper", "prctl(PR_GET_CHILD_SUBREAPER)", all, unix.SYS_PRCTL,
		func(i int) []uint64 { return []uint64{unix.PR_GET_CHILD_SUBREAPER, ss[i].Addr + slotSubreaper} }, nil); err != nil {
		return nil, err
	}
	if err := each("membarrier registrations", "membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS)", all, unix.SYS_MEMBARRIER,
		func(int) []uint64 { return []uint64{linux.MembarrierCmdGetRegistrations, 0, 0} },
		func(i int, r uint64) { out[i].Membarrier = uint32(r) }); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	for i, s := range ss {
		b, err := s.Get(0, procSlotSz)
		if err != nil {
			return nil, fmt.Errorf("dump the injected calls' answers of pid %d: %w", ts[i].Tid, err)
		}
		out[i].ChildSubreaper = le.Uint32(b[slotSubreaper:]) != 0
		var it [3]*timer.ItimerEntry
		for w := range it {
			v := b[slotItimers+32*w:]
			// struct itimerval: it_interval then it_value, each {sec, usec}.
			it[w] = &timer.ItimerEntry{
				Isec:  proto.Uint64(le.Uint64(v[0:])),
				Iusec: proto.Uint64(le.Uint64(v[8:])),
				Vsec:  proto.Uint64(le.Uint64(v[16:])),
				Vusec: proto.Uint64(le.Uint64(v[24:])),
			}
		}
		out[i].Itimers = &timer.TaskTimersEntry{Real: it[0], Virt: it[1], Prof: it[2]}
		for sig := 1; sig <= sigMax; sig++ {
			if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
				continue
			}
			if handled[i]&(1<<(sig-1)) == 0 && sig != int(unix.SIGCHLD) {
				zero := proto.Uint64(0)
				out[i].Sigactions = append(out[i].Sigactions, &criu_sa.SaEntry{Sigaction: zero, Flags: zero, Restorer: zero, Mask: zero})
				continue
			}
			v := b[slotSigactions+(sig-1)*kernelSigaSize:]
			out[i].Sigactions = append(out[i].Sigactions, &criu_sa.SaEntry{
				Sigaction: proto.Uint64(le.Uint64(v[0:])),
				Flags:     proto.Uint64(le.Uint64(v[8:])),
				Restorer:  proto.Uint64(le.Uint64(v[16:])),
				Mask:      proto.Uint64(le.Uint64(v[24:])),
			})
		}
	}
	return out, nil
}
