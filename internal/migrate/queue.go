package migrate

import (
	"sync"
	"sync/atomic"
)

// Queue runs jobs in the order they are added, one at a time, on a
// goroutine of its own: a migration sends each pre-copy round's images
// while the next round runs. After a job fails, the later ones are
// dropped and every wait returns that first error.
type Queue struct {
	work    chan func() error
	done    chan struct{}
	pending sync.WaitGroup
	queued  atomic.Int32 // jobs added and not ended
	mu      sync.Mutex
	err     error
}

// NewQueue starts a queue; Close ends it.
func NewQueue() *Queue {
	q := &Queue{work: make(chan func() error, 64), done: make(chan struct{})}
	go func() {
		defer close(q.done)
		for job := range q.work {
			if q.Err() == nil {
				if err := job(); err != nil {
					q.mu.Lock()
					q.err = err
					q.mu.Unlock()
				}
			}
			q.queued.Add(-1)
			q.pending.Done()
		}
	}()
	return q
}

// Add queues job, to run after the jobs added before it.
func (q *Queue) Add(job func() error) {
	q.pending.Add(1)
	q.queued.Add(1)
	q.work <- job
}

// Busy reports whether a job is still queued or running.
func (q *Queue) Busy() bool { return q.queued.Load() > 0 }

// Err is the first failure of a job, nil if none failed.
func (q *Queue) Err() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// Sync waits until every job added has ended and returns Err.
func (q *Queue) Sync() error {
	q.pending.Wait()
	return q.Err()
}

// Close is Sync, after which the queue takes no more jobs. It may be
// called more than once.
func (q *Queue) Close() error {
	q.mu.Lock()
	work := q.work
	q.work = nil
	q.mu.Unlock()
	if work != nil {
		close(work)
		<-q.done
	}
	return q.Err()
}
