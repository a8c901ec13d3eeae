package dump

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/interrupt"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/stats"
)

// Iterative dumps (criu's pre-dump, dump --track-mem --prev-images-dir,
// --page-server): which pages each iteration saves is mem's (Plan, the
// trackers and their holder); this file orders it around the tree's
// freeze.

// MemOptions are the options of iterative dumps and page servers.
type MemOptions struct {
	PreDump  bool // pre-dump: memory only, the tree runs on while it is copied
	TrackMem bool // --track-mem: arm write tracking for a next iteration
	// PrevImagesDir (--prev-images-dir): the previous iteration, relative
	// to the images dir unless absolute; linked as "parent".
	PrevImagesDir string
	// PageServer, if set, receives the pagemaps and pages instead of the
	// images dir (--page-server).
	PageServer PageServer
	// AutoDedup (--auto-dedup): punch the pages saved here out of the
	// parents' pages images.
	AutoDedup bool
}

// PageServer is a connection to a page server (package pagesrv).
type PageServer interface {
	// HasParent asks whether the server has a parent pagemap for
	// process imgPid.
	HasParent(imgPid int) (bool, error)
	// Open starts the pagemap of process imgPid.
	Open(imgPid int) (mem.Xfer, error)
	// Close ends the session; the server has stored everything when it
	// returns nil.
	Close() error
}

// ErrBadParent is wrapped when --prev-images-dir is not a dump to build on.
var ErrBadParent = errors.New("not a previous dump")

// iteration is the state of an iterative dump.
type iteration struct {
	parent    string                     // absolute path of the previous dir, "" for none
	parentInv *inventory.InventoryEntry  // its inventory
	method    mem.TrackMethod            // how writes are tracked here
	trackers  map[int]*mem.Tracker       // by host pid
	plans     map[*process][]mem.PlanRun // pre-dump: decided while stopped
	planStats map[*process]mem.PlanStats // for the log
	pids      map[*process][2]int        // host pid, image pid (the tree is gone from d.all once resumed)
	uptime    uint64                     // inventory dump_uptime, µs
	// parents: the parent's pagemaps, by image pid, read before the
	// freeze (parentAhead), the frozen tree does not wait for them.
	parents map[int]*mem.Parent
}

// iterating reports whether the dump takes part in a chain or a page server.
func (o MemOptions) iterating() bool {
	return o.PreDump || o.TrackMem || o.PrevImagesDir != "" || o.PageServer != nil
}

// PreDump saves the memory of the tree rooted at opts.Pid into
// opts.ImagesDir while it runs: stopped only to list its pages and arm
// the write tracking, resumed while they are copied (criu pre-dump).
func PreDump(ctx context.Context, opts Options) error {
	opts.Mem.PreDump, opts.Mem.TrackMem = true, true
	opts.LeaveRunning, opts.LeaveStopped = true, false
	// Nothing of a pre-dump is restored but pages: the session does not
	// matter (the dump that follows checks it).
	opts.ShellJob = true
	return ptrace.RunLocked(newDumper(ctx, opts, false).runPreDump)
}

// prepareIteration checks the previous dir before the tree is touched.
func (d *dumper) prepareIteration() error {
	if !d.opts.Mem.iterating() {
		return nil
	}
	it := &iteration{trackers: map[int]*mem.Tracker{}, plans: map[*process][]mem.PlanRun{},
		planStats: map[*process]mem.PlanStats{}, pids: map[*process][2]int{}}
	d.it = it
	if d.opts.Mem.TrackMem {
		var why string
		if it.method, why = mem.Tracking(); it.method == mem.TrackNone {
			return fmt.Errorf("dump: --track-mem: this kernel has %s: %w", why, ErrNotSupported)
		}
	}
	up, err := readUptime()
	if err != nil {
		return err
	}
	it.uptime = up
	prev := d.opts.Mem.PrevImagesDir
	if prev == "" {
		return nil
	}
	p := prev
	if !filepath.IsAbs(p) {
		p = filepath.Join(d.opts.ImagesDir, p)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return fmt.Errorf("dump: --prev-images-dir %s: %w", prev, err)
	}
	dir, err := images.Open(abs)
	if err != nil {
		return fmt.Errorf("dump: --prev-images-dir %s (%s): %w: %w", prev, abs, ErrBadParent, err)
	}
	inv := &inventory.InventoryEntry{}
	if err := dir.ReadOne("inventory.img", inv); err != nil {
		return fmt.Errorf("dump: --prev-images-dir %s (%s): no complete dump there: %w: %w", prev, abs, ErrBadParent, err)
	}
	it.parent, it.parentInv = abs, inv
	it.parents = parentAhead(abs, d.opts.Mem)
	return nil
}

// parentAhead reads the pagemaps of the parent dir at abs that a dump
// with these options plans against (a complete dump's: they do not
// change), by image pid; those it cannot read are read again when
// planned, and fail there.
func parentAhead(abs string, o MemOptions) map[int]*mem.Parent {
	if !o.TrackMem || o.PageServer != nil {
		return nil
	}
	names, _ := filepath.Glob(filepath.Join(abs, "pagemap-*.img"))
	out := map[int]*mem.Parent{}
	for _, n := range names {
		pid, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(n), "pagemap-"), ".img"))
		if err != nil {
			continue // a shmem pagemap
		}
		if p, err := mem.ReadParent(abs, pid); err == nil && p != nil {
			out[pid] = p
		}
	}
	return out
}

// linkParent makes the "parent" link of the new images dir, as criu,
// with the path as given.
func (d *dumper) linkParent() error {
	if d.it == nil || d.it.parent == "" {
		return nil
	}
	link := filepath.Join(d.dir.Path, mem.ParentLink)
	if err := os.Symlink(d.opts.Mem.PrevImagesDir, link); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("dump: link %s to the previous dump: %w", link, err)
	}
	d.dir.Track(mem.ParentLink)
	return nil
}

// takeTrackers takes the trackers the previous iteration left with its
// holder, keeping those of processes still the same (start time).
func (d *dumper) takeTrackers() {
	it := d.it
	if it == nil || it.parent == "" || it.method != mem.TrackUffd {
		return
	}
	held, err := mem.Take(it.parent)
	if err != nil {
		d.log.Warn("memory tracking of the previous dump lost: saving all pages", "dir", it.parent, "err", err)
	}
	if len(held) == 0 && err == nil {
		d.log.Warn("no memory tracking holder in the previous dump's dir: saving all pages", "dir", it.parent)
	}
	for pid, t := range held {
		it.trackers[pid] = t
	}
}

// reused tells whether p started after the parent dump (its pid is
// another process's now), as criu's detect_pid_reuse.
func (d *dumper) reused(p *process) bool {
	if d.it.parentInv.DumpUptime == nil {
		return false
	}
	ticks := d.it.parentInv.GetDumpUptime() / (1000000 / clockTicks)
	return p.stat.StartTime >= ticks
}

const clockTicks = 100 // USER_HZ

// planPages decides p's pages while it is stopped (mem.Plan): its
// tracker from the holder or a new one when the tree goes on, its parent
// pagemap (or the page server's word) when it has one.
func (d *dumper) planPages(p *process, serverParent bool) ([]mem.PlanRun, error) {
	it := d.it
	tr := it.trackers[p.pid]
	if tr != nil && (tr.Start != p.stat.StartTime) {
		tr.Close()
		delete(it.trackers, p.pid)
		tr = nil
	}
	keep := d.opts.Mem.TrackMem && (d.opts.Mem.PreDump || d.opts.LeaveRunning || d.opts.LeaveStopped)
	if tr == nil && keep {
		var err error
		if tr, err = mem.NewTracker(p.leader().tr, p.pid, p.stat.StartTime, it.method); err != nil {
			return nil, err
		}
		it.trackers[p.pid] = tr
	}
	var parent *mem.Parent
	if it.parent != "" && d.opts.Mem.TrackMem && !d.reused(p) {
		if d.opts.Mem.PageServer != nil {
			if serverParent {
				parent = &mem.Parent{All: true}
			}
		} else if ahead := it.parents[d.ns.ImagePid(p.pid)]; ahead != nil {
			parent = ahead
		} else {
			var err error
			if parent, err = mem.ReadParent(it.parent, d.ns.ImagePid(p.pid)); err != nil {
				return nil, err
			}
		}
	}
	if tr != nil && !tr.Armed {
		parent = nil // nothing tracked yet: everything is saved
	}
	t0 := time.Now()
	plan, st, err := mem.Plan(p.pid, p.areas, p.smaps, tr, parent)
	d.log.Debug("plan", "pid", p.pid, "took", time.Since(t0))
	if err != nil {
		return nil, err
	}
	it.planStats[p] = st
	if st.ArmErr != nil {
		d.log.Warn("memory tracking dropped: the next iteration saves all pages", "pid", p.pid, "err", st.ArmErr)
	}
	d.stats.PagesSkippedParent += st.InParent
	d.stats.PagesScanned += st.Scanned
	d.stats.PagesWritten += st.Written
	d.log.Debug("pages planned", "pid", p.pid, "written", st.Written, "in parent", st.InParent, "not in parent", st.NotInParent, "tracked", tr != nil && tr.Armed)
	return plan, nil
}

// openXfer opens where p's pages go: the page server or the images dir.
func (d *dumper) openXfer(imgPid int) (mem.Xfer, int, error) {
	if ps := d.opts.Mem.PageServer; ps != nil {
		x, err := ps.Open(imgPid)
		return x, 0, err
	}
	id := d.ids.next("pages")
	x, err := mem.NewImagesXfer(d.dir, imgPid, id)
	return x, id, err
}

// serverParent asks the page server, if any, whether it has a parent
// pagemap for imgPid.
func (d *dumper) serverParent(imgPid int) (bool, error) {
	ps := d.opts.Mem.PageServer
	if ps == nil || d.it.parent == "" || !d.opts.Mem.TrackMem {
		return false, nil
	}
	return ps.HasParent(imgPid)
}

// dumpIterPages is the pages phase of a dump that is an iteration (or
// sends to a page server): the tree is stopped, so it plans and copies.
func (d *dumper) dumpIterPages(p *process) error {
	if d.stats.MemStart.IsZero() {
		d.stats.MemStart = time.Now()
	}
	imgPid := d.ns.ImagePid(p.pid)
	hasParent, err := d.serverParent(imgPid)
	if err != nil {
		return err
	}
	x, id, err := d.openXfer(imgPid)
	if err != nil {
		return err
	}
	plan, err := d.planPages(p, hasParent)
	if err == nil {
		_, err = mem.SavePlan(p.pid, plan, x, false, d.pageStop(p.pid))
	}
	if ix, ok := x.(*mem.ImagesXfer); ok {
		ix.Abort()
		if ix.Sum != nil {
			d.sums[pagesName(id)] = ix.Sum
		}
	}
	p.pagesID = id
	d.stats.MemEnd = time.Now()
	if err == nil {
		err = d.autoDedup(imgPid)
	}
	return err
}

// autoDedup punches what this dump saved of imgPid out of the parents.
func (d *dumper) autoDedup(imgPid int) error {
	if !d.opts.Mem.AutoDedup || d.opts.Mem.PageServer != nil || d.it.parent == "" {
		return nil
	}
	n, err := mem.DedupImage(d.dir, fmt.Sprintf("pagemap-%d.img", imgPid))
	if err != nil {
		return fmt.Errorf("--auto-dedup: %w", err)
	}
	d.log.Debug("auto-dedup", "pid", imgPid, "pages punched", n)
	return nil
}

func (d *dumper) pageStop(pid int) func() error {
	return func() error {
		interrupt.At(d.ctx, "dump-page-copy")
		return interrupt.Check(d.ctx, fmt.Sprintf("dump phase pages (pid %d)", pid))
	}
}

// iterInventory adds what a next iteration reads to the inventory.
func (d *dumper) iterInventory(inv *inventory.InventoryEntry) {
	if d.it == nil || !d.opts.Mem.TrackMem {
		return
	}
	inv.DumpUptime = proto.Uint64(d.it.uptime)
	if d.opts.Mem.PreDump {
		inv.PreDumpMode = proto.Uint32(preDumpRead)
	}
}

// preDumpRead is criu's PRE_DUMP_READ: pages read with process_vm_readv.
const preDumpRead = 2

// holdTrackers hands the trackers to a holder in the new dir when the
// tree goes on, and closes stasis' copies.
func (d *dumper) holdTrackers(keep bool) {
	if d.it == nil {
		return
	}
	var trs []*mem.Tracker
	for _, t := range d.it.trackers {
		trs = append(trs, t)
	}
	if keep && d.dir != nil && len(trs) > 0 {
		if err := mem.Hold(d.dir.Path, trs); err != nil {
			d.log.Warn("memory tracking not kept: the next iteration saves all pages", "err", err)
		}
	}
	for _, t := range trs {
		t.Close()
	}
	d.it.trackers = map[int]*mem.Tracker{}
}

// runPreDump: check the target, seize, check each process, plan its pages
// and arm the tracking, resume the tree, then copy and write.
func (d *dumper) runPreDump() (err error) {
	d.stats.Start = time.Now()
	// No notification: criu runs no action script in a pre-dump.
	if err := d.prepareIteration(); err != nil {
		return err
	}
	if err := d.checkTarget(); err != nil {
		return err
	}
	if d.dir, err = images.Create(d.opts.ImagesDir); err != nil {
		return err
	}
	defer func() {
		d.holdTrackers(err == nil)
		if err != nil {
			d.log.Error("pre-dump failed", "err", err)
			if rerr := d.resume(); rerr != nil {
				err = fmt.Errorf("%w (and resuming the tree failed: %v)", err, rerr)
			}
			if left := d.removeImages(); left != "" {
				err = fmt.Errorf("%w; %s", err, left)
			}
		}
	}()
	if err := d.linkParent(); err != nil {
		return err
	}
	if d.root, err = d.seizeTree(d.opts.Pid, nil); err != nil {
		return err
	}
	d.stats.Frozen = time.Now()
	d.recordTree()
	t0 := time.Now()
	d.takeTrackers()
	d.log.Debug("trackers taken", "took", time.Since(t0))
	var procs []*process
	for _, p := range d.all {
		if p.zombie {
			continue
		}
		if err := d.stop("check", p.pid); err != nil {
			return err
		}
		if err := d.check(p); err != nil {
			return err
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		imgPid := d.ns.ImagePid(p.pid)
		hasParent, err := d.serverParent(imgPid)
		if err != nil {
			return err
		}
		if d.it.plans[p], err = d.planPages(p, hasParent); err != nil {
			return err
		}
		d.it.pids[p] = [2]int{p.pid, imgPid}
	}
	if err := d.resume(); err != nil {
		return fmt.Errorf("pre-dump: resume the tree: %w", err)
	}
	d.stats.End = time.Now()
	d.log.Info("tree resumed, copying its pages", "frozen", d.stats.End.Sub(d.stats.Frozen))
	d.stats.MemStart = time.Now()
	for _, p := range procs {
		pid, imgPid := d.it.pids[p][0], d.it.pids[p][1]
		x, id, err := d.openXfer(imgPid)
		if err != nil {
			return err
		}
		st, err := mem.SavePlan(pid, d.it.plans[p], x, true, d.pageStop(pid))
		if ix, ok := x.(*mem.ImagesXfer); ok {
			ix.Abort()
			if ix.Sum != nil {
				d.sums[pagesName(id)] = ix.Sum
			}
		}
		if err != nil {
			return err
		}
		if st.Gone > 0 {
			d.log.Info("pages unmapped during the pre-dump", "pid", pid, "pages", st.Gone)
		}
		if err := d.autoDedup(imgPid); err != nil {
			return err
		}
	}
	d.stats.MemEnd = time.Now()
	if err := d.closePageServer(); err != nil {
		return err
	}
	return d.writePreDumpImages()
}

// writePreDumpImages writes what criu's pre-dump writes besides pages:
// stats-dump and the inventory (with dump_uptime and pre_dump_mode).
func (d *dumper) writePreDumpImages() error {
	if _, err := stats.WriteDump(d.dir, d.opts.WorkDir, d.stats); err != nil {
		return err
	}
	inv := &inventory.InventoryEntry{
		ImgVersion:  proto.Uint32(ImgVersion),
		FdinfoPerId: proto.Bool(true),
		NsPerId:     proto.Bool(true),
		Lsmtype:     hostLSM().Enum(),
	}
	d.iterInventory(inv)
	return d.dir.Write("inventory.img", inv)
}

// readUptime reads /proc/uptime in µs, as criu's parse_uptime
// (centisecond precision).
func readUptime() (uint64, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, fmt.Errorf("dump: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("dump: /proc/uptime: empty")
	}
	sec, csec, _ := strings.Cut(f[0], ".")
	s, err := strconv.ParseUint(sec, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("dump: /proc/uptime %q: %w", f[0], err)
	}
	c, _ := strconv.ParseUint((csec + "00")[:2], 10, 64)
	return s*1000000 + c*10000, nil
}

// closePageServer ends the page server's session once every pagemap is
// sent: the server has stored them all when it answers.
func (d *dumper) closePageServer() error {
	ps := d.opts.Mem.PageServer
	if ps == nil {
		return nil
	}
	if err := ps.Close(); err != nil {
		return fmt.Errorf("page server: %w", err)
	}
	return nil
}
