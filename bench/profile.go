package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis"
	"github.com/stasis-cr/stasis/internal/checksum"
	"github.com/stasis-cr/stasis/internal/images"
)

// recorder is a slog.Handler that keeps the time of every record: the
// text handler of -v4 -o prints milliseconds, too coarse for a 10 ms dump.
type recorder struct {
	mu   sync.Mutex
	recs []record
}

type record struct {
	t     time.Time
	msg   string
	phase string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	var phase string
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "phase" {
			phase = a.Value.String()
		}
		return true
	})
	r.mu.Lock()
	r.recs = append(r.recs, record{rec.Time, rec.Message, phase})
	r.mu.Unlock()
	return nil
}

func (r *recorder) add(msg string) {
	r.mu.Lock()
	r.recs = append(r.recs, record{t: time.Now(), msg: msg})
	r.mu.Unlock()
}

// span is one named stretch of an in-process dump or restore.
type span struct {
	name string
	d    time.Duration
}

// spans cuts [t0, end] at every record. A span is named after the record
// that opens it: its phase, else after[msg], else the message.
func (r *recorder) spans(t0, end time.Time, first string, after map[string]string) []span {
	r.mu.Lock()
	recs := append([]record(nil), r.recs...)
	r.mu.Unlock()
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].t.Before(recs[j].t) })
	var out []span
	name, at := first, t0
	for _, rec := range recs {
		out = append(out, span{name, rec.t.Sub(at)})
		name, at = rec.phase, rec.t
		if name == "" {
			if name = after[rec.msg]; name == "" {
				name = "after: " + rec.msg
			}
		}
	}
	return append(out, span{name, end.Sub(at)})
}

// Milestones the restore observer records; the engine logs nothing
// between reading the images and its first per-process phase.
const (
	msPidExists = "restored pid exists"
	msFill1     = "1% of the pages resident"
	msFill99    = "99% of the pages resident"
)

// watchRestore polls the restored pid from outside (no wait, no ptrace:
// nothing that could disturb the tracer) and records when it appears and
// when its resident set passes 1% and 99% of the victim's memory.
func watchRestore(pid int, size int64, rec *recorder, stop <-chan struct{}) {
	pages := size / pageSize
	path := fmt.Sprintf("/proc/%d/statm", pid)
	stage := 0
	for {
		select {
		case <-stop:
			return
		default:
		}
		if b, err := os.ReadFile(path); err == nil {
			if stage == 0 {
				rec.add(msPidExists)
				stage = 1
				if pages == 0 {
					return
				}
			}
			var vsz, res int64
			fmt.Sscan(string(b), &vsz, &res)
			if stage == 1 && res >= pages/100 {
				rec.add(msFill1)
				stage = 2
			}
			if stage == 2 && res >= pages*99/100 {
				rec.add(msFill99)
				return
			}
		}
		time.Sleep(250 * time.Microsecond)
	}
}

type profile struct {
	name     string
	size     int64
	dump     [][]span // per run
	restore  [][]span
	checksum []time.Duration // checksum.Verify of the images dir, alone
	failed   []string        // runs that failed and were repeated, with the error
}

// profile runs dump and restore in-process, through the library the
// command wraps, with a recorder as the log: the phase boundaries are the
// engine's own -v4 debug records, timed to the microsecond.
func (b *bencher) profile(name string, size int64) (profile, error) {
	p := profile{name: name, size: size}
	for i := range b.runs {
		progress("profile of the %s victim (%s): run %d of %d", name, fmtSize(size), i+1, b.runs)
		d, r, c, err := b.profileOnce(name, size, i)
		for try := 1; err != nil && try < 3; try++ {
			// An in-process dump or restore fails now and then where the
			// command does not (an engine bug to find): say so, in the
			// output too, and repeat the run rather than lose the others.
			progress("  profile run %d failed, repeating it: %v", i+1, err)
			p.failed = append(p.failed, fmt.Sprintf("run %d: %v", i+1, err))
			d, r, c, err = b.profileOnce(name, size, i)
		}
		if err != nil {
			return p, fmt.Errorf("profile of the %s victim, run %d: %w", name, i+1, err)
		}
		p.dump = append(p.dump, d)
		p.restore = append(p.restore, r)
		p.checksum = append(p.checksum, c)
	}
	return p, nil
}

func (b *bencher) profileOnce(name string, size int64, i int) (dump, restore []span, sum time.Duration, err error) {
	v, err := startVictim(b.victim, filepath.Join(b.tmp, fmt.Sprintf("prof-victim-%s-%d", name, i)), size)
	if err != nil {
		return nil, nil, 0, err
	}
	defer v.close()
	imgs := filepath.Join(b.imgRoot, fmt.Sprintf("prof-%s-%d", name, i))
	defer os.RemoveAll(imgs)

	rec := &recorder{}
	t0 := time.Now()
	err = stasis.Dump(stasis.DumpOptions{Pid: v.pid, ImagesDir: imgs, Log: slog.New(rec)})
	end := time.Now()
	if err != nil {
		return nil, nil, 0, fmt.Errorf("stasis.Dump: %w", err)
	}
	if err := v.reapDumped(); err != nil {
		return nil, nil, 0, err
	}
	dump = rec.spans(t0, end, "start: check target, create dir, seize", map[string]string{
		"tree seized":            "(tree seized)",
		"dump done, tree killed": "return",
	})
	// stats-dump's memdump_time splits the pages phase: page copy and
	// write, then the rest of it (the engine now logs the other images,
	// the checksum manifest and the kill as phases of their own).
	var st stats.StatsEntry
	if dir, err := images.Open(imgs); err == nil && dir.ReadOne("stats-dump", &st) == nil {
		mem := time.Duration(st.GetDump().GetMemdumpTime()) * time.Microsecond
		for k, s := range dump {
			if s.name == "pages" && mem <= s.d {
				rest := []span{{"pages: read memory + write pages img", mem},
					{"pages: the rest of the phase (after memdump_time)", s.d - mem}}
				dump = append(dump[:k], append(rest, dump[k+1:]...)...)
				break
			}
		}
	}

	rec = &recorder{}
	v.drain()
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() { watchRestore(v.pid, size, rec, stop); close(watched) }()
	t0 = time.Now()
	r, err := stasis.Restore(stasis.RestoreOptions{ImagesDir: imgs, Log: slog.New(rec)})
	end = time.Now()
	close(stop)
	<-watched
	if err != nil {
		return nil, nil, 0, fmt.Errorf("stasis.Restore: %w", err)
	}
	track(r.Pid, true)
	afterPid := "pid exists -> 1% of its pages resident"
	if size == 0 {
		afterPid = "pid exists -> next engine record"
	}
	restore = rec.spans(t0, end, "start: read + verify images, puppet, clone3 (until the pid exists)", map[string]string{
		msPidExists:    afterPid,
		msFill1:        "memory fill: 1% -> 99% resident",
		msFill99:       "99% resident -> next engine record",
		"restore done": "return",
	})
	if err := v.ask(unix.SIGUSR1, "ack", time.Minute); err != nil {
		return nil, nil, 0, err
	}
	if err := v.verify(); err != nil {
		return nil, nil, 0, err
	}
	v.killRestored()

	t0 = time.Now()
	if err := checksum.Verify(imgs); err != nil {
		return nil, nil, 0, err
	}
	return dump, restore, time.Since(t0), nil
}

// medianSpans sums each run's spans by name (a phase runs once per
// process) and returns the per-name median over runs, in order of first
// appearance.
func medianSpans(runs [][]span) []span {
	var order []string
	seen := map[string]bool{}
	sums := make([]map[string]time.Duration, len(runs))
	for i, r := range runs {
		sums[i] = map[string]time.Duration{}
		for _, s := range r {
			if !seen[s.name] {
				seen[s.name] = true
				order = append(order, s.name)
			}
			sums[i][s.name] += s.d
		}
	}
	out := make([]span, 0, len(order))
	for _, name := range order {
		var ds []time.Duration
		for _, m := range sums {
			ds = append(ds, m[name])
		}
		_, med := minMedian(ds)
		out = append(out, span{name, med})
	}
	return out
}

func totals(runs [][]span) []time.Duration {
	var out []time.Duration
	for _, r := range runs {
		var t time.Duration
		for _, s := range r {
			t += s.d
		}
		out = append(out, t)
	}
	return out
}
