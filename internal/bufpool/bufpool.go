// Package bufpool keeps big buffers between uses: a buffer made afresh
// for each file or window is fresh memory each time (Go's heap hands
// freed spans back to the kernel, or grows), and on these VMs every first
// touch of a page is a fault of ~20 µs (256 faults for 1 MiB). A
// sync.Pool would not do: each garbage collection empties it, and a dump
// or restore of small processes collects every few of them.
package bufpool

import "sync"

// Pool keeps up to max buffers of size bytes.
type Pool struct {
	size, max int
	mu        sync.Mutex
	free      [][]byte
}

// New returns a pool of at most max buffers of size bytes.
func New(size, max int) *Pool { return &Pool{size: size, max: max} }

// Get returns a buffer of n bytes, a kept one when n is not more than the
// pool's size, and the function that gives it back.
func (p *Pool) Get(n int) ([]byte, func()) {
	if n > p.size {
		return make([]byte, n), func() {}
	}
	p.mu.Lock()
	var b []byte
	if k := len(p.free); k > 0 {
		b, p.free = p.free[k-1], p.free[:k-1]
	}
	p.mu.Unlock()
	if b == nil {
		b = make([]byte, p.size)
	}
	return b[:n], func() {
		p.mu.Lock()
		if len(p.free) < p.max {
			p.free = append(p.free, b[:p.size])
		}
		p.mu.Unlock()
	}
}
