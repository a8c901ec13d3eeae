package core

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/siginfo"

	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/regs"
	"github.com/stasis-cr/stasis/internal/remote"
)

// sigaltstack flags (include/uapi/linux/signal.h), missing from x/sys.
const (
	ssOnstack = 1
	ssDisable = 2
)

// ValidateThread checks the core entry of a thread that is not the leader.
func ValidateThread(ce *criucore.CoreEntry) error {
	switch {
	case ce.GetMtype() != criucore.CoreEntry_X86_64:
		return fmt.Errorf("architecture %v is not x86_64", ce.GetMtype())
	case ce.GetThreadInfo().GetGpregs() == nil || ce.GetThreadInfo().GetFpregs() == nil:
		return fmt.Errorf("no registers")
	case ce.GetThreadCore() == nil:
		return fmt.Errorf("no thread_core")
	}
	return checkSiginfo(ce.GetThreadCore().GetSignalsP().GetSignals())
}

func checkSiginfo(q []*siginfo.SiginfoEntry) error {
	for _, si := range q {
		if len(si.GetSiginfo()) != ptrace.SiginfoSize {
			return fmt.Errorf("siginfo of %d bytes", len(si.GetSiginfo()))
		}
	}
	return nil
}

// Validate checks that a core entry holds what Restore needs, so that a
// damaged image is refused before any task is created.
func Validate(ce *criucore.CoreEntry) error {
	switch {
	case ce.GetMtype() != criucore.CoreEntry_X86_64:
		return fmt.Errorf("architecture %v is not x86_64", ce.GetMtype())
	case ce.GetThreadInfo().GetGpregs() == nil || ce.GetThreadInfo().GetFpregs() == nil:
		return fmt.Errorf("no registers")
	case ce.GetTc() == nil:
		return fmt.Errorf("no task_core")
	case len(ce.GetTc().GetSigactions()) > sigMax:
		return fmt.Errorf("%d sigactions", len(ce.GetTc().GetSigactions()))
	case len(ce.GetTc().GetRlimits().GetRlimits()) > rlimNlimits:
		return fmt.Errorf("%d rlimits", len(ce.GetTc().GetRlimits().GetRlimits()))
	}
	return checkSiginfo(append(ce.GetTc().GetSignalsS().GetSignals(), ce.GetThreadCore().GetSignalsP().GetSignals()...))
}

// RestoreProcess sets the process-wide state of tc through thread t of
// the restored process: signal handlers, personality, rlimits, itimers,
// prctl bits and the shared pending signals. Its memory must be in place.
func RestoreProcess(t remote.Task, tc *criucore.TaskCoreEntry) error {
	pid := t.HostPid()
	steps := []struct {
		name string
		fn   func() error
	}{
		{"sigactions", func() error { return restoreSigactions(t, tc) }},
		{"personality", func() error {
			_, err := t.Call("personality", unix.SYS_PERSONALITY, uint64(tc.GetPersonality()))
			return err
		}},
		{"rlimits", func() error {
			for res, rl := range tc.GetRlimits().GetRlimits() {
				lim := unix.Rlimit{Cur: rl.GetCur(), Max: rl.GetMax()}
				if err := unix.Prlimit(pid, res, &lim, nil); err != nil {
					return fmt.Errorf("resource %d to %d/%d: %w", res, lim.Cur, lim.Max, err)
				}
			}
			return nil
		}},
		{"itimers", func() error { return restoreItimers(t, tc) }},
		{"child_subreaper", func() error {
			if !tc.GetChildSubreaper() {
				return nil
			}
			_, err := t.Call("prctl(PR_SET_CHILD_SUBREAPER)", unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 1)
			return err
		}},
		{"oom_score_adj", func() error {
			if tc.OomScoreAdj == nil {
				return nil
			}
			return os.WriteFile("/proc/"+strconv.Itoa(pid)+"/oom_score_adj", []byte(strconv.Itoa(int(tc.GetOomScoreAdj()))), 0)
		}},
		{"loginuid", func() error { return restoreLoginuid(t, tc) }},
		{"membarrier registrations", func() error {
			// Each bit is a registration command, issued again (a
			// process that registered for expedited barriers gets EPERM
			// from them otherwise).
			m := uint64(tc.GetMembarrierRegistrationMask())
			for bit := uint64(1); m != 0; bit <<= 1 {
				if m&bit == 0 {
					continue
				}
				m &^= bit
				if _, err := t.Call(fmt.Sprintf("membarrier(%#x)", bit), unix.SYS_MEMBARRIER, bit, 0, 0); err != nil {
					return err
				}
			}
			return nil
		}},
		{"shared pending signals", func() error { return queueSignals(t, tc.GetSignalsS().GetSignals(), t.Pid(), false) }},
	}
	for _, step := range steps {
		if err := step.fn(); err != nil {
			return fmt.Errorf("restore %s of pid %d: %w", step.name, pid, err)
		}
	}
	return nil
}

// RestoreThread sets what one thread has of its own (ce is its core
// entry): sigaltstack, robust list, clear_child_tid, rseq, pdeath signal,
// name, scheduling and its private pending signals. Credentials come later
// (RestoreCreds), registers last (FinalRegs). t is the thread's own Task,
// pid the pid of its process as the images know it.
func RestoreThread(t remote.Task, pid int, ce *criucore.CoreEntry) error {
	return restoreThread(t, pid, ce, false)
}

// RestoreThreadRest is RestoreThread without the calls
// RestoreThreadCalls made into every thread of the process at once.
func RestoreThreadRest(t remote.Task, pid int, ce *criucore.CoreEntry) error {
	return restoreThread(t, pid, ce, true)
}

func restoreThread(t remote.Task, pid int, ce *criucore.CoreEntry, batched bool) error {
	tid := t.HostPid()
	th := ce.GetThreadCore()
	tc := ce.GetTc()
	steps := []struct {
		name string
		fn   func() error
	}{
		{"sigaltstack", func() error {
			sas := th.GetSas()
			if batched || !wantSas(ce) {
				return nil
			}
			b := make([]byte, 24)
			le := binary.LittleEndian
			le.PutUint64(b[0:], sas.GetSsSp())
			le.PutUint32(b[8:], sas.GetSsFlags()&^ssOnstack)
			le.PutUint64(b[16:], sas.GetSsSize())
			a, err := t.Put(0, b)
			if err != nil {
				return err
			}
			_, err = t.Call("sigaltstack", unix.SYS_SIGALTSTACK, a, 0)
			return err
		}},
		{"robust list", func() error {
			if batched || th.GetFutexRla() == 0 {
				return nil
			}
			_, err := t.Call("set_robust_list", unix.SYS_SET_ROBUST_LIST, th.GetFutexRla(), uint64(th.GetFutexRlaLen()))
			return err
		}},
		{"clear_child_tid", func() error {
			if batched {
				return nil
			}
			_, err := t.Call("set_tid_address", unix.SYS_SET_TID_ADDRESS, ce.GetThreadInfo().GetClearTidAddr())
			return err
		}},
		{"rseq", func() error {
			r := th.GetRseqEntry()
			if batched || !wantRseq(ce) {
				return nil
			}
			_, err := t.Call("rseq", unix.SYS_RSEQ, r.GetRseqAbiPointer(), uint64(r.GetRseqAbiSize()), 0, uint64(r.GetSignature()))
			return err
		}},
		{"pdeath_signal", func() error {
			if batched || th.GetPdeathSig() == 0 {
				return nil // a new task has none
			}
			_, err := t.Call("prctl(PR_SET_PDEATHSIG)", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uint64(th.GetPdeathSig()))
			return err
		}},
		{"comm", func() error {
			if batched {
				return nil
			}
			name := th.GetComm()
			if name == "" {
				name = tc.GetComm()
			}
			b := make([]byte, 16)
			copy(b[:15], name)
			a, err := t.Put(0, b)
			if err != nil {
				return err
			}
			_, err = t.Call("prctl(PR_SET_NAME)", unix.SYS_PRCTL, unix.PR_SET_NAME, a)
			return err
		}},
		{"scheduling", func() error {
			if th.SchedNice != nil {
				if err := unix.Setpriority(unix.PRIO_PROCESS, tid, int(th.GetSchedNice())); err != nil {
					return err
				}
			}
			if p := th.GetSchedPolicy(); p != 0 {
				param := []byte{0, 0, 0, 0}
				binary.LittleEndian.PutUint32(param, th.GetSchedPrio())
				a, err := t.Put(0, param)
				if err != nil {
					return err
				}
				_, err = t.Call("sched_setscheduler", unix.SYS_SCHED_SETSCHEDULER, 0, uint64(p), a)
				return err
			}
			// The default policy: the thread inherited stasis' own,
			// which is not always the default (stasis run by chrt, or
			// under SCHED_BATCH by a job scheduler).
			return resetSchedPolicy(tid)
		}},
		{"pending signals", func() error { return queueSignals(t, th.GetSignalsP().GetSignals(), pid, true) }},
	}
	for _, step := range steps {
		if err := step.fn(); err != nil {
			return fmt.Errorf("restore %s of tid %d: %w", step.name, tid, err)
		}
	}
	return nil
}

// resetSchedPolicy gives thread tid the default policy (SCHED_OTHER, no
// reset-on-fork) if it has another, keeping its nice value.
func resetSchedPolicy(tid int) error {
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return fmt.Errorf("sched_getattr: %w", err)
	}
	if a.Policy == unix.SCHED_NORMAL && a.Flags&unix.SCHED_FLAG_RESET_ON_FORK == 0 {
		return nil
	}
	a.Policy, a.Flags, a.Priority = unix.SCHED_NORMAL, 0, 0
	if err := unix.SchedSetAttr(tid, a, 0); err != nil {
		return fmt.Errorf("sched_setattr: %w", err)
	}
	return nil
}

// RestoreCreds switches thread t to the credentials of its image. It is
// the last injected step of a thread but seccomp: after it the thread may
// no longer be allowed what stasis still does inside it.
func RestoreCreds(t remote.Task, ce *criucore.CoreEntry) error {
	if err := restoreCreds(t, ce.GetThreadCore()); err != nil {
		return fmt.Errorf("restore credentials of tid %d: %w", t.HostPid(), err)
	}
	return nil
}

// restoreSigactions sets every handler of the image. One at its default
// needs no call when the task's is at its default too (not ignored: a
// restored task inherits SIG_IGN dispositions from stasis through exec).
func restoreSigactions(t remote.Task, tc *criucore.TaskCoreEntry) error {
	st, err := proc.ReadStatus(t.HostPid())
	if err != nil {
		return err
	}
	i := 0
	for sig := 1; sig <= sigMax && i < len(tc.GetSigactions()); sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		sa := tc.GetSigactions()[i]
		i++
		if sa.GetSigaction()|sa.GetFlags()|sa.GetRestorer()|sa.GetMask() == 0 && st.SigIgn&(1<<(sig-1)) == 0 {
			continue
		}
		b := make([]byte, kernelSigaSize)
		le := binary.LittleEndian
		le.PutUint64(b[0:], sa.GetSigaction())
		le.PutUint64(b[8:], sa.GetFlags())
		le.PutUint64(b[16:], sa.GetRestorer())
		le.PutUint64(b[24:], sa.GetMask())
		a, err := t.Put(0, b)
		if err != nil {
			return err
		}
		if _, err := t.Call("rt_sigaction", unix.SYS_RT_SIGACTION, uint64(sig), a, 0, 8); err != nil {
			return fmt.Errorf("signal %d: %w", sig, err)
		}
	}
	return nil
}

func restoreItimers(t remote.Task, tc *criucore.TaskCoreEntry) error {
	tm := tc.GetTimers()
	if tm == nil {
		return nil
	}
	for which, it := range []interface {
		GetIsec() uint64
		GetIusec() uint64
		GetVsec() uint64
		GetVusec() uint64
	}{tm.GetReal(), tm.GetVirt(), tm.GetProf()} {
		vsec, vusec := it.GetVsec(), it.GetVusec()
		if vsec == 0 && vusec == 0 {
			if it.GetIsec() == 0 && it.GetIusec() == 0 {
				continue // disarmed
			}
			// A periodic timer that expired with its signal still pending
			// reads 0: the kernel re-arms it only when the signal is
			// dequeued. A zero value would disarm it; run it one interval
			// from now, as criu does.
			vsec, vusec = it.GetIsec(), it.GetIusec()
		}
		b := make([]byte, 32)
		le := binary.LittleEndian
		le.PutUint64(b[0:], it.GetIsec())
		le.PutUint64(b[8:], it.GetIusec())
		le.PutUint64(b[16:], vsec)
		le.PutUint64(b[24:], vusec)
		a, err := t.Put(0, b)
		if err != nil {
			return err
		}
		if _, err := t.Call("setitimer", unix.SYS_SETITIMER, uint64(which), a, 0); err != nil {
			return err
		}
	}
	return nil
}

// queueSignals queues dumped signals again. The thread sends them to
// itself (injected), which is the only way the kernel accepts a siginfo
// with si_code >= 0; all signals are blocked meanwhile so that none is
// delivered before the thread runs on its own registers. pid is the pid
// of t's process as the images know it.
func queueSignals(t remote.Task, infos []*siginfo.SiginfoEntry, pid int, thread bool) error {
	if len(infos) == 0 {
		return nil
	}
	if err := ptrace.SetSigmask(t.HostPid(), ^uint64(0)); err != nil {
		return err
	}
	for _, e := range infos {
		si := e.GetSiginfo()
		sig := uint64(binary.LittleEndian.Uint32(si[0:]))
		a, err := t.Put(0, si)
		if err != nil {
			return err
		}
		if thread {
			_, err = t.Call("rt_tgsigqueueinfo", unix.SYS_RT_TGSIGQUEUEINFO, uint64(pid), uint64(t.Pid()), sig, a)
		} else {
			_, err = t.Call("rt_sigqueueinfo", unix.SYS_RT_SIGQUEUEINFO, uint64(pid), sig, a)
		}
		if err != nil {
			return fmt.Errorf("signal %d: %w", sig, err)
		}
	}
	return nil
}

// FinalRegs returns the registers and XSAVE area thread tid resumes
// with. tmpl is the XSAVE area of a task of this restore (ptrace's
// GetXState): it gives only the size and the format this CPU and kernel
// use, the same for every task, so that the threads of a process need
// not read theirs one by one.
func FinalRegs(tmpl []byte, tid int, ce *criucore.CoreEntry) (unix.PtraceRegs, []byte, error) {
	r, xs, err := regs.FromImage(ce.GetThreadInfo(), tmpl)
	if err != nil {
		return r, nil, fmt.Errorf("registers of pid %d: %w", tid, err)
	}
	return r, xs, nil
}

// restoreLoginuid gives the process its audit login uid. Only the task
// itself may write its /proc/self/loginuid (CAP_AUDIT_CONTROL, which it
// still has: credentials come later), so the write is injected; a task
// that has it already (inherited from its restored parent, or from
// stasis) needs none.
func restoreLoginuid(t remote.Task, tc *criucore.TaskCoreEntry) error {
	if tc.Loginuid == nil {
		return nil
	}
	want := tc.GetLoginuid()
	if cur, err := readProcInt(t.HostPid(), "loginuid"); err == nil && uint32(cur) == want {
		return nil
	}
	const path = "/proc/self/loginuid\x00"
	val := strconv.FormatUint(uint64(want), 10)
	p, err := t.Put(0, []byte(path+val))
	if err != nil {
		return err
	}
	const atFdcwd = ^uint64(99) // AT_FDCWD, -100
	fd, err := t.Call("openat(/proc/self/loginuid)", unix.SYS_OPENAT, atFdcwd, p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	_, werr := t.Call("write(loginuid)", unix.SYS_WRITE, fd, p+uint64(len(path)), uint64(len(val)))
	if _, err := t.Call("close", unix.SYS_CLOSE, fd); err != nil && werr == nil {
		werr = err
	}
	if werr != nil {
		return fmt.Errorf("set loginuid %d: %w", want, werr)
	}
	return nil
}
