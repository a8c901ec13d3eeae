package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis"
)

// progressDelay: an operation that ends sooner shows no progress line.
const progressDelay = time.Second

// withProgress shows, on a terminal, one line of the page copy's progress
// (bytes done and known in all, rate, time left) that it rewrites in
// place, from a second into the operation until done is called, which
// clears it. Nothing is shown when stderr is not a terminal (a log, a
// runtime's pipe) or with -v0.
func withProgress(ctx context.Context, quiet bool) (context.Context, func()) {
	if quiet || !isTerminal(os.Stderr) {
		return ctx, func() {}
	}
	ctx, read := stasis.WithProgress(ctx)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		shown := false
		// The rate is the copy's own: from when the first bytes to copy
		// were known, not from the start (seizing, reading images).
		var from stasis.Progress
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				if shown {
					fmt.Fprint(os.Stderr, "\r\x1b[K")
				}
				return
			case <-t.C:
				p := read()
				if p.Total == 0 {
					continue
				}
				if from.Total == 0 {
					from = p
				}
				if p.Elapsed < progressDelay || p.Done == 0 {
					continue
				}
				writeProgress(os.Stderr, p, from)
				shown = true
			}
		}
	}()
	var once sync.Once
	return ctx, func() { once.Do(func() { close(stop); wg.Wait() }) }
}

// writeProgress writes the line: "pages 412/1024 MiB (40%), 812 MB/s, ETA
// 0.8 s", the rate since from.
func writeProgress(w io.Writer, p, from stasis.Progress) {
	const mib = 1 << 20
	rate := 0.0
	if d := (p.Elapsed - from.Elapsed).Seconds(); d > 0 {
		rate = float64(p.Done-from.Done) / d
	}
	eta := "?"
	if rate > 0 && p.Total >= p.Done {
		eta = fmt.Sprintf("%.1f s", float64(p.Total-p.Done)/rate)
	}
	fmt.Fprintf(w, "\rpages %d/%d MiB (%d%%), %.0f MB/s, ETA %s\x1b[K",
		p.Done/mib, p.Total/mib, p.Done*100/max(p.Total, 1), rate/1e6, eta)
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
