package dump

import (
	"errors"
	"fmt"
	"sort"
	"time"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/interrupt"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// process is one process of the dumped tree with all that was collected
// about it.
type process struct {
	pid      int
	parent   *process
	children []*process
	threads  []*thread // threads[0] is the leader
	zombie   bool
	exitCode int  // zombies: the wait status their parent will get
	refused  bool // a preflight's phase failed on it: the next ones skip it
	// sharesFiles: its fd table is its parent's (sharedfdt.go).
	sharesFiles bool

	stat    *proc.Stat
	status  *proc.Status
	smaps   []proc.VMA
	scratch *ptrace.Scratch
	asked   *asked        // the task state's injected calls (taskstate.go)
	tps     []*threadProc // its threads' /proc files, read in the background
	ids     *criucore.TaskKobjIdsEntry

	tc      *criucore.TaskCoreEntry
	mm      *mm.MmEntry
	areas   []*mem.Area
	fds     []*fdinfo.FdinfoEntry
	cwdID   uint32
	rootID  uint32
	pagesID int
}

// thread is one seized thread.
type thread struct {
	tid     int
	tr      *ptrace.Task
	stopSig unix.Signal // group-stop signal at seize time, 0 if it ran
	blocked uint64      // blocked mask at seize time (and all along)
	core    *criucore.CoreEntry
}

func (p *process) leader() *thread { return p.threads[0] }

// errGone marks a task that exited while it was being seized.
var errGone = errors.New("task exited during seize")

// seizeProcess stops every thread of pid. Threads may be created while
// stasis seizes the others: the thread list is read again until a pass
// finds no new thread, at which point all of them are stopped and none can
// appear any more. A thread that exits meanwhile is simply not there.
func (d *dumper) seizeProcess(pid int, parent *process) (*process, error) {
	p := &process{pid: pid, parent: parent}
	st, err := proc.ReadStat(pid)
	if err != nil {
		return nil, errGone
	}
	if st.State == 'Z' {
		// A leader that left by pthread_exit is a zombie while its other
		// threads run on: restoring it as a zombie would lose them
		// (criu 4.2 refuses it too).
		if tids, err := proc.Tasks(pid); err == nil && len(tids) > 1 {
			return nil, fmt.Errorf("pid %d (%s): its leader thread exited but %d other threads run: a zombie leader with live threads is %w", pid, st.Comm, len(tids)-1, ErrNotSupported)
		}
		p.zombie, p.stat = true, st
		p.exitCode = st.ExitCode
		return p, nil
	}
	seized := map[int]bool{} // and io_uring workers, which are not seized
	for {
		tids, err := unseized(pid, seized)
		if err != nil {
			return p, d.unlessGone(p, err)
		}
		d.interruptAhead(tids)
		fresh := 0
		for _, tid := range tids {
			tr, sig, err := d.seizeTid(tid)
			if err != nil {
				if errors.Is(err, unix.ESRCH) || errors.Is(err, ptrace.ErrExited) || errors.Is(err, unix.EPERM) && exited(tid) {
					continue // the thread exited first (an exiting task refuses PTRACE_SEIZE with EPERM)
				}
				if tid == pid && errors.Is(err, unix.EPERM) {
					if st, serr := proc.ReadStatus(pid); serr == nil && st.TracerPid != 0 {
						return p, fmt.Errorf("seize pid %d: it is traced by pid %d (a debugger or another dump): %w", pid, st.TracerPid, err)
					}
				}
				return p, fmt.Errorf("seize tid %d of pid %d: %w", tid, pid, err)
			}
			seized[tid] = true
			fresh++
			tr.Leader = pid
			// The mask stays the thread's own while stasis holds it: an
			// injected call blocks every signal only for itself (see
			// ptrace.Task.Syscall), so a stasis that dies leaves none
			// blocked.
			th := &thread{tid: tid, tr: tr, stopSig: sig, blocked: tr.Blocked}
			if sig == unix.SIGTRAP {
				th.stopSig = 0
			}
			p.threads = append(p.threads, th)
		}
		if fresh == 0 {
			break
		}
	}
	if len(p.threads) == 0 {
		// Every thread exited before it could be seized: the process is in
		// exit_group and about to become a zombie of its (stopped) parent,
		// or gone if that parent reaps automatically.
		return d.exiting(p)
	}
	if p.threads[0].tid != pid {
		sort.Slice(p.threads, func(i, j int) bool { return p.threads[i].tid == pid })
		if len(p.threads) == 0 || p.threads[0].tid != pid {
			return p, fmt.Errorf("pid %d: its main thread has exited while other threads run: %w", pid, ErrNotSupported)
		}
	}
	// Threads that are not the leader, in tid order, as criu lists them.
	rest := p.threads[1:]
	sort.Slice(rest, func(i, j int) bool { return rest[i].tid < rest[j].tid })
	return p, nil
}

// exited tells whether thread tid is dead or a zombie.
func exited(tid int) bool {
	st, err := proc.ReadStat(tid)
	return err != nil || st.State == 'Z' || st.State == 'X'
}

// exiting waits for a process caught in exit to become a zombie, which
// takes the kernel no more than the time to release its memory.
func (d *dumper) exiting(p *process) (*process, error) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st, err := proc.ReadStat(p.pid)
		if err != nil || st.State == 'X' {
			return nil, errGone
		}
		if st.State == 'Z' {
			p.zombie, p.stat, p.exitCode = true, st, st.ExitCode
			return p, nil
		}
		time.Sleep(time.Millisecond)
	}
	return p, fmt.Errorf("pid %d: no thread could be stopped and it did not become a zombie within 5s", p.pid)
}

func (d *dumper) unlessGone(p *process, err error) error {
	if _, serr := proc.ReadStat(p.pid); serr != nil {
		return errGone
	}
	return err
}

// seizeTree stops the whole tree: a process is stopped before its children
// are listed, so that its set of children is final when read.
func (d *dumper) seizeTree(pid int, parent *process) (*process, error) {
	p, err := d.seizeProcess(pid, parent)
	if p != nil && len(p.threads) > 0 || p != nil && p.zombie {
		d.all = append(d.all, p)
	}
	if err != nil {
		return nil, err
	}
	if p.zombie {
		return p, nil
	}
	var kids []int
	for _, th := range p.threads {
		c, err := proc.Children(pid, th.tid)
		if err != nil {
			return nil, err
		}
		kids = append(kids, c...)
	}
	sort.Ints(kids)
	// The children stop while their elder siblings' subtrees are seized
	// (interruptAhead): their stops overlap instead of adding up.
	d.interruptAhead(kids)
	for _, k := range kids {
		// A big tree takes a while to seize.
		if err := interrupt.Check(d.ctx, fmt.Sprintf("dump phase seize (pid %d)", k)); err != nil {
			return nil, err
		}
		c, err := d.seizeTree(k, p)
		if errors.Is(err, errGone) {
			// Reaped between listing and seizing: its parent is stopped,
			// so only a kill from outside can do that.
			continue
		}
		if err != nil {
			return nil, err
		}
		p.children = append(p.children, c)
	}
	return p, nil
}
