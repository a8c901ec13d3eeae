package ptrace

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestQuietStops checks that SIGCHLD's handler loses its stop
// notifications only while a tracer runs, nested tracers included.
func TestQuietStops(t *testing.T) {
	flags := func() uint64 {
		var act sigaction
		if err := rtSigaction(unix.SIGCHLD, nil, &act); err != nil {
			t.Fatal(err)
		}
		if act.handler <= 1 {
			t.Skip("SIGCHLD has no handler in this test binary: the kernel sends it for no stop anyway")
		}
		return act.flags
	}
	if flags()&saNoCldStop != 0 {
		t.Fatal("SA_NOCLDSTOP set before any tracer ran")
	}
	undo1 := quietStops()
	undo2 := quietStops()
	if flags()&saNoCldStop == 0 {
		t.Fatal("SA_NOCLDSTOP not set while tracers run")
	}
	undo2()
	if flags()&saNoCldStop == 0 {
		t.Fatal("SA_NOCLDSTOP taken off while a tracer still runs")
	}
	undo1()
	if flags()&saNoCldStop != 0 {
		t.Fatal("SA_NOCLDSTOP left set after the last tracer")
	}
}
