package core

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/rlimit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/rseq"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/siginfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/regs"
)

// Task states of task_core_entry.task_state (criu/include/pstree.h).
const (
	TaskAlive   = 1
	TaskDead    = 2
	TaskStopped = 3
	TaskZombie  = 6
)

const (
	sigMax         = 64 // _NSIG, arch/x86/include/uapi/asm/signal.h
	kernelSigaSize = 32 // struct sigaction as the kernel sees it (include/linux/signal_types.h)
	rlimNlimits    = 16 // RLIM_NLIMITS, include/uapi/asm-generic/resource.h
)

// stateOf maps a /proc state letter and the stop signal of a seized task
// to criu's task_state.
func stateOf(stopSig unix.Signal) uint32 {
	if stopSig != 0 {
		return TaskStopped
	}
	return TaskAlive
}

// DumpProcess collects the process-wide state of a stopped process through
// its thread t (any thread; stasis uses the leader): signal handlers,
// itimers, rlimits, shared pending signals, personality and prctl bits.
// blocked is the leader's blocked mask at seize time (criu keeps it in
// task_core too). calls holds the answers of its injected calls
// (AskProcesses, which asks many processes at once); nil asks them here,
// through the scratch memory s.
func DumpProcess(t *ptrace.Task, s *ptrace.Scratch, st *proc.Stat, status *proc.Status, stopSig unix.Signal, blocked uint64, calls *ProcessCalls) (*criucore.TaskCoreEntry, error) {
	pid := t.Tid
	if calls == nil {
		cs, err := AskProcesses([]*ptrace.Task{t}, []*ptrace.Scratch{s}, []uint64{status.SigIgn | status.SigCgt})
		if err != nil {
			return nil, err
		}
		calls = &cs[0]
	}
	tc := &criucore.TaskCoreEntry{
		TaskState: proto.Uint32(stateOf(stopSig)),
		ExitCode:  proto.Uint32(0),
		Flags:     proto.Uint32(st.Flags),
		BlkSigset: proto.Uint64(blocked),
		Comm:      proto.String(st.Comm),
	}
	if stopSig != 0 {
		tc.StopSigno = proto.Uint32(uint32(stopSig))
	}
	steps := []struct {
		name string
		fn   func() error
	}{
		{"rlimits", func() error { return dumpRlimits(pid, tc) }},
		{"shared pending signals", func() error {
			shared, err := ptrace.PeekSiginfo(pid, true)
			tc.SignalsS = sigQueue(shared)
			return err
		}},
		{"oom_score_adj", func() error {
			v, err := readProcInt(pid, "oom_score_adj")
			tc.OomScoreAdj = proto.Int32(int32(v))
			return err
		}},
		{"loginuid", func() error {
			v, err := readProcInt(pid, "loginuid")
			tc.Loginuid = proto.Uint32(uint32(v))
			return err
		}},
	}
	tc.Personality = proto.Uint32(calls.Personality)
	tc.Sigactions = calls.Sigactions
	tc.Timers = calls.Itimers
	tc.ChildSubreaper = proto.Bool(calls.ChildSubreaper)
	if calls.Membarrier != 0 {
		tc.MembarrierRegistrationMask = proto.Uint32(calls.Membarrier)
	}
	for _, step := range steps {
		if err := step.fn(); err != nil {
			return nil, fmt.Errorf("dump %s of pid %d: %w", step.name, pid, err)
		}
	}
	return tc, nil
}

// DumpThread collects the state of one stopped thread: registers, blocked
// mask and private pending signals, and what each thread has of its own
// (robust list, clear_child_tid, sigaltstack, rseq, credentials, name,
// scheduling). tp is what ReadThreadProc read of it; blocked is its mask
// at seize time. calls holds the answers of its injected calls
// (AskThreads, which asks all threads of a process at once); nil asks
// them here.
func DumpThread(t *ptrace.Task, s *ptrace.Scratch, tp *ThreadProc, blocked uint64, calls *ThreadCalls) (*criucore.CoreEntry, error) {
	tid := t.Tid
	if calls == nil {
		cs, err := AskThreads([]*ptrace.Task{t}, s)
		if err != nil {
			return nil, err
		}
		calls = &cs[0]
	}
	xstate, err := ptrace.GetXState(tid)
	if err != nil {
		return nil, err
	}
	r := t.Base
	regs.FixRestart(&r)
	ti, err := regs.ToImage(&r, xstate)
	if err != nil {
		return nil, fmt.Errorf("registers of tid %d: %w", tid, err)
	}
	th := &criucore.ThreadCoreEntry{
		BlkSigset:   proto.Uint64(blocked),
		Comm:        proto.String(calls.Comm),
		SchedNice:   proto.Int32(tp.nice),
		SchedPolicy: proto.Uint32(tp.policy),
		SchedPrio:   proto.Uint32(tp.rtPrio),
		SeccompMode: criucore.SeccompMode_disabled.Enum(),
		Sas:         calls.Sas,
		PdeathSig:   proto.Uint32(calls.PdeathSig),
		FutexRla:    proto.Uint64(tp.robustHead),
		FutexRlaLen: proto.Uint32(uint32(tp.robustLen)),
	}
	if tp.resetOnFork {
		th.SchedPolicy = proto.Uint32(tp.policy | unix.SCHED_RESET_ON_FORK)
	}
	ti.ClearTidAddr = proto.Uint64(calls.ClearTid)
	c := proto.Clone(tp.creds).(*creds.CredsEntry)
	c.Secbits = proto.Uint32(calls.Securebits)
	th.Creds = c
	steps := []struct {
		name string
		fn   func() error
	}{
		{"pending signals", func() error {
			if tp.Status.SigPnd == 0 {
				// /proc says no signal is pending on the thread itself
				// (a stopped thread takes none off its queue).
				return nil
			}
			private, err := ptrace.PeekSiginfo(tid, false)
			th.SignalsP = sigQueue(private)
			return err
		}},
		{"rseq", func() error {
			c, err := ptrace.GetRseqConfig(tid)
			if err != nil {
				return err
			}
			if c.Pointer != 0 {
				th.RseqEntry = &rseq.RseqEntry{
					RseqAbiPointer: proto.Uint64(c.Pointer),
					RseqAbiSize:    proto.Uint32(c.Size),
					Signature:      proto.Uint32(c.Signature),
				}
			}
			return nil
		}},
	}
	for _, step := range steps {
		if err := step.fn(); err != nil {
			return nil, fmt.Errorf("dump %s of tid %d: %w", step.name, tid, err)
		}
	}
	return &criucore.CoreEntry{
		Mtype:      criucore.CoreEntry_X86_64.Enum(),
		ThreadInfo: ti,
		ThreadCore: th,
	}, nil
}

// dumpRlimits reads /proc/PID/limits: prlimit on another process needs
// CAP_SYS_RESOURCE or the same uids, and stasis has neither for a process
// that dropped privileges.
func dumpRlimits(pid int, tc *criucore.TaskCoreEntry) error {
	lims, err := proc.ReadLimits(pid)
	if err != nil {
		return err
	}
	if len(lims) != rlimNlimits {
		return fmt.Errorf("/proc/%d/limits lists %d limits, want %d", pid, len(lims), rlimNlimits)
	}
	rl := &criucore.TaskRlimitsEntry{}
	for _, l := range lims {
		rl.Rlimits = append(rl.Rlimits, &rlimit.RlimitEntry{Cur: proto.Uint64(l.Cur), Max: proto.Uint64(l.Max)})
	}
	tc.Rlimits = rl
	return nil
}

func sigQueue(infos [][]byte) *siginfo.SignalQueueEntry {
	if len(infos) == 0 {
		return nil
	}
	q := &siginfo.SignalQueueEntry{}
	for _, si := range infos {
		q.Signals = append(q.Signals, &siginfo.SiginfoEntry{Siginfo: si})
	}
	return q
}

func readProcInt(pid int, name string) (int64, error) {
	b, err := proc.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + name)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(bytes.TrimSpace(b))), 10, 64)
}
