package stasis

import (
	"fmt"
	"io"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"

	"github.com/stasis-cr/stasis/internal/images"
)

// DisplayStats writes what criu's --display-stats prints after a dump
// (restore false) or a restore, from the stats-dump or stats-restore image
// that the operation left in workDir, in criu's words.
func DisplayStats(out io.Writer, workDir string, restore bool) error {
	d, err := images.Open(workDir)
	if err != nil {
		return fmt.Errorf("display stats: %w", err)
	}
	name := "stats-dump"
	if restore {
		name = "stats-restore"
	}
	var e stats.StatsEntry
	if err := d.ReadOne(name, &e); err != nil {
		return fmt.Errorf("display stats: %s in %s: %w", name, workDir, err)
	}
	pages := func(what string, n uint64) { fmt.Fprintf(out, "%s: %d (0x%x)\n", what, n, n) }
	if !restore {
		s := e.GetDump()
		fmt.Fprintln(out, "Displaying dump stats:")
		fmt.Fprintf(out, "Freezing time: %d us\n", s.GetFreezingTime())
		fmt.Fprintf(out, "Frozen time: %d us\n", s.GetFrozenTime())
		fmt.Fprintf(out, "Memory dump time: %d us\n", s.GetMemdumpTime())
		fmt.Fprintf(out, "Memory write time: %d us\n", s.GetMemwriteTime())
		if s.IrmapResolve != nil {
			fmt.Fprintf(out, "IRMAP resolve time: %d us\n", s.GetIrmapResolve())
		}
		pages("Memory pages scanned", s.GetPagesScanned())
		pages("Memory pages skipped from parent", s.GetPagesSkippedParent())
		pages("Memory pages written", s.GetPagesWritten())
		pages("Lazy memory pages", s.GetPagesLazy())
		return nil
	}
	s := e.GetRestore()
	fmt.Fprintln(out, "Displaying restore stats:")
	pages("Pages compared", s.GetPagesCompared())
	pages("Pages skipped COW", s.GetPagesSkippedCow())
	if s.PagesRestored != nil {
		pages("Pages restored", s.GetPagesRestored())
	}
	fmt.Fprintf(out, "Restore time: %d us\n", s.GetRestoreTime())
	fmt.Fprintf(out, "Forking time: %d us\n", s.GetForkingTime())
	return nil
}
