package migrate

import (
	"errors"
	"testing"
)

func TestQueueOrderAndFirstError(t *testing.T) {
	q := NewQueue()
	var ran []int
	block := make(chan struct{})
	q.Add(func() error { <-block; ran = append(ran, 1); return nil })
	if !q.Busy() {
		t.Fatal("a queue with a job running is not busy")
	}
	boom := errors.New("boom")
	q.Add(func() error { ran = append(ran, 2); return boom })
	q.Add(func() error { ran = append(ran, 3); return nil })
	close(block)
	if err := q.Sync(); !errors.Is(err, boom) {
		t.Fatalf("Sync: %v, want the second job's error", err)
	}
	if q.Busy() {
		t.Fatal("a synced queue is busy")
	}
	if len(ran) != 2 || ran[0] != 1 || ran[1] != 2 {
		t.Fatalf("ran %v, want [1 2]: in order, none after a failure", ran)
	}
	if err := q.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close: %v", err)
	}
	if err := q.Close(); !errors.Is(err, boom) {
		t.Fatalf("second Close: %v", err)
	}
}
