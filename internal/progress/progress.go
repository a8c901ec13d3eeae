package progress

import (
	"context"
	"sync/atomic"
	"time"
)

// Meter is the progress of one operation, in bytes of pages.
type Meter struct {
	start       time.Time
	done, total atomic.Uint64
}

// New returns a meter started now.
func New() *Meter { return &Meter{start: time.Now()} }

type key struct{}

// With returns ctx carrying m.
func With(ctx context.Context, m *Meter) context.Context { return context.WithValue(ctx, key{}, m) }

// From returns the meter of ctx, nil if it has none.
func From(ctx context.Context) *Meter {
	m, _ := ctx.Value(key{}).(*Meter)
	return m
}

// Expect adds n bytes to the total to be copied.
func (m *Meter) Expect(n uint64) {
	if m != nil {
		m.total.Add(n)
	}
}

// Add counts n bytes copied.
func (m *Meter) Add(n uint64) {
	if m != nil {
		m.done.Add(n)
	}
}

// Read returns the bytes copied, the bytes known to be copied in all and
// the time since the meter started.
func (m *Meter) Read() (done, total uint64, elapsed time.Duration) {
	if m == nil {
		return 0, 0, 0
	}
	return m.done.Load(), m.total.Load(), time.Since(m.start)
}
