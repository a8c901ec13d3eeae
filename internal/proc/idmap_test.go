package proc

import (
	"errors"
	"strings"
	"testing"
)

func TestParseIDMap(t *testing.T) {
	m, err := ParseIDMap(strings.NewReader("         0     100000      65536\n     65536          0          1\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ global, inside uint32 }{{100000, 0}, {100007, 7}, {165535, 65535}, {0, 65536}, {165536, overflowID}, {5, overflowID}} {
		if got := m.Inside(c.global); got != c.inside {
			t.Errorf("Inside(%d) = %d, want %d", c.global, got, c.inside)
		}
	}
	if m.Identity() {
		t.Error("a range map is not the identity")
	}
	id, _ := ParseIDMap(strings.NewReader("0 0 4294967295\n"))
	if !id.Identity() || id.Inside(123456) != 123456 {
		t.Errorf("the initial namespace's map %v", id)
	}
	for _, bad := range []string{"0 1\n", "0 x 1\n", "0 0 4294967296\n"} {
		if _, err := ParseIDMap(strings.NewReader(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseIDMap(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}

func FuzzParseIDMap(f *testing.F) {
	f.Add("0 100000 65536\n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseIDMap(strings.NewReader(s))
		if err == nil {
			m.Inside(100000)
		}
	})
}
