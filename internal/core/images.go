package core

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	pstreepb "github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/seccomp"

	"github.com/stasis-cr/stasis/internal/images"
)

// Images is what the core images say of one process.
type Images struct {
	Core    *criucore.CoreEntry   // the leader's, with task_core
	Threads []*criucore.CoreEntry // every other thread's, in pstree order
	Zombie  bool                  // dead or zombie: only task_core matters
}

// ReadImages reads and checks the core images of the process of pe:
// core-PID.img and, for a live one, core-TID.img of each other thread,
// every field the restore uses checked, and the seccomp chain of every
// thread found in filters (seccomp.img).
func ReadImages(d *images.Dir, pe *pstreepb.PstreeEntry, filters []*seccomp.SeccompFilter) (*Images, error) {
	pid := pe.GetPid()
	name := fmt.Sprintf("core-%d.img", pid)
	ci := &Images{Core: &criucore.CoreEntry{}}
	if err := d.ReadOne(name, ci.Core); err != nil {
		return nil, err
	}
	if ci.Core.GetTc() == nil {
		return nil, bad(name, "no task_core in the core of a process")
	}
	switch ci.Core.GetTc().GetTaskState() {
	case TaskDead, TaskZombie:
		ci.Zombie = true
		return ci, nil
	case TaskAlive, TaskStopped:
	default:
		return nil, bad(name, "task state %d", ci.Core.GetTc().GetTaskState())
	}
	if len(pe.GetThreads()) == 0 || pe.GetThreads()[0] != pid {
		return nil, bad("pstree.img", "pid %d: its thread list does not start with itself", pid)
	}
	if err := Validate(ci.Core); err != nil {
		return nil, bad(name, "%v", err)
	}
	if err := ValidatePosixTimers(ci.Core.GetTc().GetTimers().GetPosix()); err != nil {
		return nil, bad(name, "%v", err)
	}
	var err error
	if ci.Threads, err = readThreadCores(d, pe.GetThreads()[1:]); err != nil {
		return nil, err
	}
	for _, c := range append([]*criucore.CoreEntry{ci.Core}, ci.Threads...) {
		th := c.GetThreadCore()
		if _, err := SeccompChain(filters, th.GetSeccompMode(), th.GetSeccompFilter()); err != nil {
			return nil, bad("seccomp.img", "pid %d: %v", pid, err)
		}
	}
	return ci, nil
}

// bad is the error of images that decode but are inconsistent.
func bad(file string, format string, args ...any) error {
	return fmt.Errorf("image %s: %w: %s", file, images.ErrInconsistent, fmt.Sprintf(format, args...))
}

// readThreadCores reads and checks the core images of threads tids, on a
// few goroutines: a process of 10,000 threads has as many files to open,
// read and decode. On errors, the one of the first failing thread read
// is returned.
func readThreadCores(d *images.Dir, tids []uint32) ([]*criucore.CoreEntry, error) {
	cores := make([]*criucore.CoreEntry, len(tids))
	errs := make([]error, len(tids))
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for w := min(runtime.GOMAXPROCS(0), len(tids)); w > 0; w-- {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(tids) && !failed.Load(); i = int(next.Add(1) - 1) {
				f := fmt.Sprintf("core-%d.img", tids[i])
				c := &criucore.CoreEntry{}
				if err := d.ReadOne(f, c); err != nil {
					errs[i] = err
				} else if err := ValidateThread(c); err != nil {
					errs[i] = bad(f, "%v", err)
				}
				if errs[i] != nil {
					failed.Store(true)
				}
				cores[i] = c
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return cores, nil
}
