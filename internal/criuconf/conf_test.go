package criuconf

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	in := `tcp-established
work-dir "/home/u/criu/my \"work\" directory"
#this is a comment
no-restore-sibling   # this is another comment

  --log-file  a\b.log
`
	got, err := Parse(strings.NewReader(in), "x.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := []Option{
		{Name: "tcp-established", File: "x.conf", Line: 1},
		{Name: "work-dir", Arg: `/home/u/criu/my "work" directory`, HasArg: true, File: "x.conf", Line: 2},
		{Name: "no-restore-sibling", File: "x.conf", Line: 4},
		{Name: "log-file", Arg: `a\b.log`, HasArg: true, File: "x.conf", Line: 6},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{`log-file "x`, "a b c"} {
		if _, err := Parse(strings.NewReader(in), "bad.conf"); !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), "bad.conf:1") {
			t.Errorf("%q: %v, want a syntax error naming bad.conf:1", in, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("tcp-established\nwork-dir \"a \\\" b\" # c\n")
	f.Fuzz(func(t *testing.T, s string) {
		opts, err := Parse(strings.NewReader(s), "f")
		if err == nil {
			for _, o := range opts {
				if o.Name == "" && !o.HasArg {
					t.Errorf("empty option from %q", s)
				}
			}
		}
	})
}
