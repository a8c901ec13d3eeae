package dump

import (
	"fmt"
	"os"

	"github.com/stasis-cr/stasis/internal/mem"
)

// dumpShmem dumps the content of every shared anonymous memory object of
// the tree once, from the object itself (mem.DumpShmem): the pagemaps of
// the processes miss the pages that only a process gone since (a worker
// that exited) or a mapping unmapped since had touched. Its size is the
// furthest any of its mappings reaches into it, as criu counts it.
func (d *dumper) dumpShmem() error {
	type object struct {
		pid        int
		start, end uint64
		size       int64
	}
	objs := map[uint64]*object{}
	var order []uint64
	for _, p := range d.all {
		for _, a := range p.areas {
			if !a.Has(mem.AnonShared) || a.Has(mem.AreaSysVIPC) { // a System V segment is its ipc namespace's
				continue
			}
			id, size := a.E.GetShmid(), int64(a.E.GetPgoff()+a.End()-a.Start())
			if o := objs[id]; o != nil {
				o.size = max(o.size, size)
				continue
			}
			objs[id] = &object{pid: p.pid, start: a.Start(), end: a.End(), size: size}
			order = append(order, id)
		}
	}
	for _, id := range order {
		o := objs[id]
		f, err := os.Open(fmt.Sprintf("/proc/%d/map_files/%x-%x", o.pid, o.start, o.end))
		if err != nil {
			return fmt.Errorf("shared memory %d (vma %#x-%#x of pid %d): %w", id, o.start, o.end, o.pid, err)
		}
		err = mem.DumpShmem(d.dir, f, o.size, id, d.ids.next("pages"))
		f.Close()
		if err != nil {
			return fmt.Errorf("shared memory %d (vma %#x-%#x of pid %d): %w", id, o.start, o.end, o.pid, err)
		}
	}
	return nil
}
