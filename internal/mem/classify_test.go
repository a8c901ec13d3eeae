package mem

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/stasis-cr/stasis/internal/proc"
)

// TestClassifyRefuse: a mapping stasis cannot dump goes to refuse; nil
// from it leaves that area out and goes on (a preflight lists them all),
// an error ends the classification with it.
func TestClassifyRefuse(t *testing.T) {
	vmas := []proc.VMA{
		{Start: 0x10000, End: 0x20000, Read: true, Write: true},
		{Start: 0x20000, End: 0x21000, Read: true, Path: "weird", Inode: 0},
		{Start: 0x30000, End: 0x31000, Read: true, Path: "[heap]"},
		{Start: 0x40000, End: 0x41000, Read: true, Path: "odd", Inode: 0},
	}
	var refused []error
	areas, err := Classify(os.Getpid(), vmas, func(err error) error { refused = append(refused, err); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(areas) != 2 || areas[0].Start() != 0x10000 || areas[1].Start() != 0x30000 || !areas[1].Has(AreaHeap) {
		t.Errorf("areas %v, want the anonymous one and the heap", areas)
	}
	if len(refused) != 2 {
		t.Fatalf("refused %v, want the two odd mappings", refused)
	}
	for i, want := range []string{"vma 0x20000-0x21000", "vma 0x40000-0x41000"} {
		if !errors.Is(refused[i], ErrUnsupportedVMA) || !strings.Contains(refused[i].Error(), want) {
			t.Errorf("refusal %d: %v, want %s, wrapping ErrUnsupportedVMA", i, refused[i], want)
		}
	}

	stop := errors.New("stop")
	calls := 0
	areas, err = Classify(os.Getpid(), vmas, func(error) error { calls++; return stop })
	if !errors.Is(err, stop) || areas != nil || calls != 1 {
		t.Errorf("a refuse that stops: %v, %v after %d calls; want the error, no areas, 1 call", areas, err, calls)
	}
}
