package stats

import (
	"os"
	"path/filepath"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// Dump is what a dump measures for stats-dump.
type Dump struct {
	Start, Frozen, End         time.Time // seize started, tree frozen, images written
	MemStart, MemEnd           time.Time // the pages phase
	PagesScanned, PagesWritten uint64
	PagesSkippedParent         uint64 // left in the parent dump (--track-mem)
	PagesLazy                  uint64 // left to a lazy dump's page server
}

// Restore is what a restore measures for stats-restore.
type Restore struct {
	Start, Forked                  time.Time // restore started, every task created
	Compared, SkippedCOW, Restored uint64    // pages (mem.FillStats)
}

// WriteDump writes stats-dump into the work dir work ("": the images dir
// dir), where podman and checkpointctl read it. It returns the work dir
// if it opened one other than dir (a failed dump removes what it wrote).
func WriteDump(dir *images.Dir, work string, s Dump) (*images.Dir, error) {
	if work == "" {
		work = dir.Path
	}
	us := func(a, b time.Time) *uint32 { return proto.Uint32(uint32(b.Sub(a).Microseconds())) }
	e := &stats.StatsEntry{Dump: &stats.DumpStatsEntry{
		FreezingTime:       us(s.Start, s.Frozen),
		FrozenTime:         us(s.Frozen, s.End),
		MemdumpTime:        us(s.MemStart, s.MemEnd),
		MemwriteTime:       us(s.MemStart, s.MemEnd),
		PagesScanned:       proto.Uint64(s.PagesScanned),
		PagesSkippedParent: proto.Uint64(s.PagesSkippedParent),
		PagesWritten:       proto.Uint64(s.PagesWritten),
		PagesLazy:          proto.Uint64(s.PagesLazy),
	}}
	if dir != nil && filepath.Clean(work) == filepath.Clean(dir.Path) {
		return nil, dir.Write("stats-dump", e)
	}
	wd, err := images.Open(work)
	if err != nil {
		if err := os.MkdirAll(work, 0o700); err != nil {
			return nil, err
		}
		if wd, err = images.Open(filepath.Clean(work)); err != nil {
			return nil, err
		}
	}
	return wd, wd.Write("stats-dump", e)
}

// WriteRestore writes stats-restore into the work dir work, as criu does
// (podman and checkpointctl read it).
func WriteRestore(work string, st Restore) error {
	d, err := images.Open(work)
	if err != nil {
		return err
	}
	return d.Write("stats-restore", &stats.StatsEntry{Restore: &stats.RestoreStatsEntry{
		PagesCompared:   proto.Uint64(st.Compared),
		PagesSkippedCow: proto.Uint64(st.SkippedCOW),
		ForkingTime:     proto.Uint32(uint32(st.Forked.Sub(st.Start).Microseconds())),
		RestoreTime:     proto.Uint32(uint32(time.Since(st.Start).Microseconds())),
		PagesRestored:   proto.Uint64(st.Restored),
	}})
}
