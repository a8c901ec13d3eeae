package restore

import (
	"fmt"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"

	"github.com/stasis-cr/stasis/internal/interrupt"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/progress"
	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/puppet"
)

const (
	scratchPages     = 16
	scratchSize      = scratchPages * mem.PageSize
	syscallTrapBytes = "\x0f\x05\xcc" // syscall; int3
	// seqCodeOff is where ptrace.SeqCode sits in the injection page:
	// the threads of a process run their calls through it as tables.
	seqCodeOff = 64
)

// taskRestorer turns one freshly cloned process into its image.
type taskRestorer struct {
	r       *restorer
	t       *ptrace.Task   // the leader
	threads []*ptrace.Task // the other threads, in the order of img.threads
	img     *taskImages
	s       *ptrace.Scratch // data part of the scratch mapping
}

func (r *restorer) newTaskRestorer(t *ptrace.Task, img *taskImages) *taskRestorer {
	t.SyscallIP = r.scratchBase
	tr := &taskRestorer{r: r, t: t, img: img,
		s: &ptrace.Scratch{Pid: t.Tid, Addr: r.scratchBase + mem.PageSize, Size: scratchSize - mem.PageSize}}
	r.procs = append(r.procs, tr)
	r.files.HostPids[img.Pid()] = t.Tid
	return tr
}

// allThreads returns the leader and the other threads with their images.
func (tr *taskRestorer) allThreads() ([]*ptrace.Task, []*criucore.CoreEntry) {
	return append([]*ptrace.Task{tr.t}, tr.threads...), append([]*criucore.CoreEntry{tr.img.core}, tr.img.threads...)
}

// scratchHole finds an address range free in every process of the image
// (and in the puppet), where each task keeps its injection page until the
// end: children inherit it from their parent. The injection page is the
// orchestrator's (it is how every step reaches into a task), but which
// addresses the restored address spaces leave free is mem's to say.
func scratchHole(s *imageSet, puppetPid int) (uint64, error) {
	spaces := make([]*mem.Image, 0, len(s.all))
	for _, ti := range s.all {
		spaces = append(spaces, ti.mem)
	}
	base, ok, err := mem.FreeRange(puppetPid, spaces, scratchSize)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("no free address range for %d bytes of scratch memory", scratchSize)
	}
	return base, nil
}

// mapScratch creates the injection page in the root task (children
// inherit it): syscall; int3 at its start, then ptrace.SeqCode, pointer
// arguments in the pages after.
func (tr *taskRestorer) mapScratch(via uint64) error {
	tr.t.SyscallIP = via
	if _, err := ptrace.MapScratch(tr.t, tr.r.scratchBase, scratchSize); err != nil {
		return err
	}
	page := make([]byte, seqCodeOff+len(ptrace.SeqCode))
	copy(page, syscallTrapBytes)
	copy(page[seqCodeOff:], ptrace.SeqCode)
	if err := ptrace.WriteMem(tr.t.Tid, tr.r.scratchBase, page); err != nil {
		return err
	}
	tr.t.SyscallIP = tr.r.scratchBase
	return nil
}

// restoreMemory gives the task its image's address space (mem): the
// root from an empty one, a child from the copy of its parent's it was
// cloned with.
func (tr *taskRestorer) restoreMemory(parent *taskImages) error {
	var from *mem.Image
	if parent != nil && parent.Live() {
		from = parent.mem
	} else if err := puppet.CloseInherited(tr, tr.r.channelFd); err != nil {
		return err
	}
	st, err := tr.r.memory().RestoreMemory(tr, tr.img.mem, from, func() error {
		interrupt.At(tr.r.ctx, "restore-page-fill")
		return interrupt.Check(tr.r.ctx, fmt.Sprintf("restore phase memory (pid %d)", tr.t.Tid))
	})
	if err != nil {
		return err
	}
	tr.r.stats.add(st)
	tr.r.log.Debug("pages restored", "pid", tr.t.Tid, "written", st.Restored, "compared", st.Compared, "shared", st.SkippedCOW)
	return nil
}

// restoreMM sets the task's mm fields, auxv and exe link (mem).
func (tr *taskRestorer) restoreMM() error { return tr.r.memory().RestoreMM(tr, tr.img.mem) }

// memory is the restorer of the tree's address spaces, made once the
// injection page's place is known.
func (r *restorer) memory() *mem.Restorer {
	if r.mem == nil {
		r.mem = &mem.Restorer{Dir: r.imgs.dir, Files: r.files, FileName: r.imgs.fileName, SameFile: r.imgs.sameFile,
			Shmem: r.imgs.shmem, Keep: [2]uint64{r.scratchBase, r.scratchBase + scratchSize}, Log: r.log,
			Progress: progress.From(r.ctx), Lazy: r.opts.LazyPages}
	}
	return r.mem
}
