package stats

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"

	"github.com/stasis-cr/stasis/internal/images"
)

// TestWriteStats: stats-dump goes to the work dir (made if missing), with
// the phase times and page counts.
func TestWriteStats(t *testing.T) {
	work := filepath.Join(t.TempDir(), "work", "dir")
	t0 := time.Now()
	s := Dump{
		Start: t0, Frozen: t0.Add(3 * time.Millisecond), MemStart: t0.Add(4 * time.Millisecond),
		MemEnd: t0.Add(9 * time.Millisecond), End: t0.Add(10 * time.Millisecond),
		PagesScanned: 100, PagesWritten: 42,
	}
	if _, err := WriteDump(nil, work, s); err != nil {
		t.Fatal(err)
	}
	d, err := images.Open(work)
	if err != nil {
		t.Fatal(err)
	}
	var se stats.StatsEntry
	if err := d.ReadOne("stats-dump", &se); err != nil {
		t.Fatal(err)
	}
	e := se.GetDump()
	if e.GetFreezingTime() != 3000 || e.GetFrozenTime() != 7000 || e.GetMemdumpTime() != 5000 ||
		e.GetPagesScanned() != 100 || e.GetPagesWritten() != 42 {
		t.Errorf("stats-dump %v", e)
	}
	// criu 4.2 writes every field of the entry; podman and checkpointctl
	// read it.
	m := e.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		if !m.Has(fields.Get(i)) {
			t.Errorf("stats-dump lacks %s, which criu 4.2 writes", fields.Get(i).Name())
		}
	}
}
