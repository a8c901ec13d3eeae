package proc

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestLimitsMatchPrlimit(t *testing.T) {
	lims, err := ReadLimits(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if len(lims) != 16 {
		t.Fatalf("%d limits, want 16", len(lims))
	}
	for res, l := range lims {
		var want unix.Rlimit
		if err := unix.Prlimit(0, res, nil, &want); err != nil {
			t.Fatal(err)
		}
		if l.Cur != want.Cur || l.Max != want.Max {
			t.Errorf("%s: %d/%d, prlimit says %d/%d", l.Name, l.Cur, l.Max, want.Cur, want.Max)
		}
	}
}

func TestLimitsMalformed(t *testing.T) {
	for _, in := range []string{"Limit\nshort", "Limit                     Soft Limit\nMax cpu time              x unlimited seconds"} {
		if _, err := ParseLimits(strings.NewReader(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}
