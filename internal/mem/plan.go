package mem

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// Which pages an iteration of a chain saves (pre-dump, dump --track-mem):
// of the pages a full dump would save (PageRuns), those written since the
// previous iteration go with their data, the others are entries in
// parent (PE_PARENT). Plan decides it while the tree is stopped and arms
// the tracking for the next iteration; SavePlan copies the data (for a
// pre-dump, once the tree runs again) into an Xfer: the images dir or a
// page server.

// PlanRun is a run of pages of one area: with data, or in the parent.
type PlanRun struct {
	Addr, Pages uint64
	InParent    bool
	Shared      bool // read without pinning (see Run)
	area        int  // index of its area: entries never cross areas
	lazy        bool // its area may be restored lazily: data entries get PE_LAZY
}

// Parent is what the previous iteration holds of one process.
type Parent struct {
	// All: every page not written since is in the parent (a page server
	// said it has the parent; its pagemap is not here to look at).
	All    bool
	ranges [][2]uint64 // pages the parent's pagemap covers, sorted
}

// ReadParent reads the pagemap image of imgPid in the images dir at path:
// every range its entries cover (with data or further up the chain). A
// missing image means no parent for this process (nil, nil).
func ReadParent(path string, imgPid int) (*Parent, error) {
	dir := &images.Dir{Path: path}
	name := fmt.Sprintf("pagemap-%d.img", imgPid)
	if !dir.Has(name) {
		return nil, nil
	}
	r, err := dir.NewReader(name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if err := r.Next(&pagemap.PagemapHead{}); err != nil {
		return nil, fmt.Errorf("parent %s: %w", name, err)
	}
	p := &Parent{}
	for {
		pe := &pagemap.PagemapEntry{}
		if err := r.Next(pe); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("parent %s: %w", name, err)
		}
		if !HasData(pe) && !InParent(pe) {
			continue // lazy: the pages are nowhere in the chain
		}
		lo := pe.GetVaddr()
		p.ranges = append(p.ranges, [2]uint64{lo, lo + NrPages(pe)*PageSize})
	}
	sort.Slice(p.ranges, func(i, j int) bool { return p.ranges[i][0] < p.ranges[j][0] })
	return p, nil
}

// has reports whether the parent holds the page at addr.
func (p *Parent) has(addr uint64) bool {
	if p.All {
		return true
	}
	k := sort.Search(len(p.ranges), func(i int) bool { return p.ranges[i][1] > addr })
	return k < len(p.ranges) && p.ranges[k][0] <= addr
}

// PlanStats counts the pages of a plan.
type PlanStats struct {
	Scanned, Written, InParent uint64
	// NotInParent: pages not written since the parent that it does not
	// have either (saved with their data).
	NotInParent uint64
	// ArmErr: why the tracker could not be armed for the next iteration
	// (it was dropped).
	ArmErr error
}

// Plan decides which pages of pid (areas, and smaps, read while it is
// stopped) are saved with data and which stay in parent (nil: no parent,
// all saved), then arms tr (nil: no tracking) for the next iteration.
// It must run while the process is stopped.
func Plan(pid int, areas []*Area, smaps []proc.VMA, tr *Tracker, parent *Parent) ([]PlanRun, PlanStats, error) {
	var st PlanStats
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, st, err
	}
	defer pm.Close()
	var plan []PlanRun
	for i, a := range areas {
		if !a.Dumpable() {
			continue
		}
		runs, scanned, err := scanPages(pm, a)
		if err != nil {
			return nil, st, fmt.Errorf("pid %d: %w", pid, err)
		}
		st.Scanned += scanned
		// Scanned even without a parent: the scan is what protects the
		// pages again for the next iteration.
		var dirty [][2]uint64
		tracked := tr.covered(a, smaps) && trackable(a)
		if tracked {
			if dirty, err = tr.written(pm, a); err != nil {
				return nil, st, err
			}
		}
		if parent == nil || !tracked {
			for _, r := range runs {
				plan = appendRun(plan, PlanRun{Addr: r.Addr, Pages: r.Pages, Shared: r.Shared, area: i, lazy: LazyVMA(a.E)})
				st.Written += r.Pages
			}
			continue
		}
		d := 0
		for _, r := range runs {
			for k := uint64(0); k < r.Pages; k++ {
				addr := r.Addr + k*PageSize
				for d < len(dirty) && dirty[d][1] <= addr {
					d++
				}
				isDirty := d < len(dirty) && dirty[d][0] <= addr
				in := !isDirty && parent.has(addr)
				if !isDirty && !in {
					st.NotInParent++
				}
				plan = appendRun(plan, PlanRun{Addr: addr, Pages: 1, InParent: in, Shared: r.Shared && !in, area: i, lazy: LazyVMA(a.E)})
				if in {
					st.InParent++
				} else {
					st.Written++
				}
			}
		}
	}
	if tr != nil {
		// A tracker that cannot be armed (its process exec'd since: the
		// userfaultfd is bound to the old mm) is dropped, not the dump:
		// the next iteration then saves everything.
		if err := tr.arm(pm, areas, smaps); err != nil {
			st.ArmErr = err
			tr.Close()
			tr.Armed = false
		}
	}
	return plan, st, nil
}

// appendRun adds r to plan, extending the last run when it continues it.
func appendRun(plan []PlanRun, r PlanRun) []PlanRun {
	if l := len(plan); l > 0 {
		last := &plan[l-1]
		if last.area == r.area && last.InParent == r.InParent && last.Shared == r.Shared && last.Addr+last.Pages*PageSize == r.Addr {
			last.Pages += r.Pages
			return plan
		}
	}
	return append(plan, r)
}

// Xfer receives the pagemap of one process and its pages: Add for each
// entry in address order, the data of an entry with PE_PRESENT written
// right after it, then Close. ImagesXfer writes the images dir; package
// pagesrv sends to a page server.
type Xfer interface {
	Add(e *pagemap.PagemapEntry) error
	io.Writer
	Close() error
}

// entries turns a plan into pagemap entries, one per run of one kind in
// one area (runs read differently but adjacent are one entry).
func entries(plan []PlanRun) []*pagemap.PagemapEntry {
	var out []*pagemap.PagemapEntry
	lastArea := -1
	for _, r := range plan {
		flags := uint32(PEPresent)
		if r.lazy {
			flags |= peLazy // as every other dump's (lazy.go)
		}
		if r.InParent {
			flags = peParent
		}
		if l := len(out); l > 0 && lastArea == r.area && out[l-1].GetFlags() == flags && out[l-1].GetVaddr()+out[l-1].GetNrPages()*PageSize == r.Addr {
			out[l-1].NrPages = proto.Uint64(out[l-1].GetNrPages() + r.Pages)
			continue
		}
		out = append(out, &pagemap.PagemapEntry{
			Vaddr: proto.Uint64(r.Addr), CompatNrPages: proto.Uint32(0),
			NrPages: proto.Uint64(r.Pages), Flags: proto.Uint32(flags),
		})
		lastArea = r.area
	}
	return out
}

// entryWriter passes the data of the plan's runs to x, calling x.Add for
// each entry just before its data (and for entries in parent in between).
type entryWriter struct {
	x    Xfer
	ents []*pagemap.PagemapEntry
	next int
	left uint64
}

func (w *entryWriter) advance() error {
	for w.left == 0 && w.next < len(w.ents) {
		e := w.ents[w.next]
		w.next++
		if err := w.x.Add(e); err != nil {
			return err
		}
		if HasData(e) {
			w.left = e.GetNrPages() * PageSize
		}
	}
	return nil
}

func (w *entryWriter) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		if err := w.advance(); err != nil {
			return done, err
		}
		if w.left == 0 {
			return done, fmt.Errorf("%d bytes of pages beyond the pagemap", len(b)-done)
		}
		n := int(min(w.left, uint64(len(b)-done)))
		if _, err := w.x.Write(b[done : done+n]); err != nil {
			return done, err
		}
		w.left -= uint64(n)
		done += n
	}
	return done, nil
}

// SaveStats are the figures of one SavePlan.
type SaveStats struct {
	Pages uint64 // pages with data sent
	Gone  uint64 // pages that vanished while the task ran (pre-dump)
}

// SavePlan copies the data of the plan's runs out of pid into x with
// their pagemap entries, and closes x. running: the task runs meanwhile
// (a pre-dump): a page it unmapped since the plan reads as zeros, which
// is safe, since the next iteration cannot find it unwritten in the same
// VMA (a new mapping is saved whole). stop is as for DumpPages.
func SavePlan(pid int, plan []PlanRun, x Xfer, running bool, stop func() error) (SaveStats, error) {
	var st SaveStats
	var runs []Run
	for _, r := range plan {
		if !r.InParent {
			runs = append(runs, Run{Addr: r.Addr, Pages: r.Pages, Shared: r.Shared})
			st.Pages += r.Pages
		}
	}
	w := &entryWriter{x: x, ents: entries(plan)}
	fill := func(ios []ptrace.VMIO) error {
		if stop != nil {
			if err := stop(); err != nil {
				return err
			}
		}
		err := ptrace.ReadvMem(pid, ios)
		if err == nil || !running {
			return err
		}
		for _, io := range ios {
			if ptrace.ReadMemNoPin(pid, io.Remote, io.Local) != nil {
				clear(io.Local)
				st.Gone += uint64(len(io.Local) / PageSize)
			}
		}
		return nil
	}
	if err := copyRuns(runs, w, fill); err != nil {
		return st, fmt.Errorf("save pages of pid %d: %w", pid, err)
	}
	// The entries in parent after the last data.
	if err := w.advance(); err != nil {
		return st, err
	}
	if w.left != 0 || w.next != len(w.ents) {
		return st, fmt.Errorf("save pages of pid %d: the copy ended before the pagemap", pid)
	}
	return st, x.Close()
}
