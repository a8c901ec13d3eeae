package stasis

import (
	"context"
	"time"

	"github.com/stasis-cr/stasis/internal/progress"
)

// Progress is how far the page copy of a dump, or the page fill of a
// restore, has come: bytes of pages done and to do. Total grows as each
// process of a tree is reached.
type Progress struct {
	Done, Total uint64
	Elapsed     time.Duration // since WithProgress
}

// WithProgress returns a context for DumpContext or RestoreContext whose
// progress the returned function reads, from any goroutine.
func WithProgress(ctx context.Context) (context.Context, func() Progress) {
	m := progress.New()
	return progress.With(ctx, m), func() Progress {
		d, t, e := m.Read()
		return Progress{Done: d, Total: t, Elapsed: e}
	}
}
