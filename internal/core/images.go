package core

import (
	"fmt"

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
	for _, tid := range pe.GetThreads()[1:] {
		f := fmt.Sprintf("core-%d.img", tid)
		c := &criucore.CoreEntry{}
		if err := d.ReadOne(f, c); err != nil {
			return nil, err
		}
		if err := ValidateThread(c); err != nil {
			return nil, bad(f, "%v", err)
		}
		ci.Threads = append(ci.Threads, c)
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
