package main

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/stasis-cr/stasis"
)

func TestWriteProgress(t *testing.T) {
	var b bytes.Buffer
	from := stasis.Progress{Total: 1 << 30, Elapsed: time.Second}
	writeProgress(&b, stasis.Progress{Done: 256 << 20, Total: 1 << 30, Elapsed: 2 * time.Second}, from)
	if want := "\rpages 256/1024 MiB (25%), 268 MB/s, ETA 3.0 s\x1b[K"; b.String() != want {
		t.Errorf("line %q, want %q", b.String(), want)
	}
}

// TestProgressQuiet: with -v0, or with stderr not a terminal (go test's),
// nothing is measured nor shown.
func TestProgressQuiet(t *testing.T) {
	for _, quiet := range []bool{true, false} {
		if !quiet && isTerminal(os.Stderr) {
			continue
		}
		ctx, done := withProgress(context.Background(), quiet)
		if ctx != context.Background() {
			t.Errorf("quiet %v: a meter was set up", quiet)
		}
		done()
	}
}
