package images

import (
	"errors"
	"strings"
	"testing"
)

// TestCheckPath: canonical absolute paths pass; relative ones (unless
// allowed), ".." components, NUL bytes and overlong paths are refused as
// ErrUnsafePath.
func TestCheckPath(t *testing.T) {
	for _, c := range []struct {
		p   string
		rel bool
		ok  bool
	}{
		{"/tmp/a.txt", false, true},
		{"/", false, true},
		{"/tmp/..x/x..", false, true},
		{"./sock", true, true},
		{"sock", true, true},
		{"", true, false},
		{"tmp/a", false, false},
		{"/tmp/../etc/passwd", false, false},
		{"/..", false, false},
		{"../x", true, false},
		{"/tmp/a\x00b", false, false},
		{"/" + strings.Repeat("a", 5000), false, false},
	} {
		err := CheckPath(c.p, c.rel)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, ErrUnsafePath)) {
			t.Errorf("CheckPath(%q, %v) = %v, want ok=%v", c.p, c.rel, err, c.ok)
		}
	}
}

// TestDirRefusesOutsideNames: an image name can only be a file of the
// images dir (image names are built from numbers of the images, never
// from their strings, but the directory checks anyway).
func TestDirRefusesOutsideNames(t *testing.T) {
	d := &Dir{Path: t.TempDir()}
	for _, name := range []string{"pages-../../x.img", "../inventory.img", "..", "a/b.img", ""} {
		if _, err := d.OpenRaw(name); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("OpenRaw(%q): %v, want ErrUnsafePath", name, err)
		}
		if _, err := d.NewReader(name); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("NewReader(%q): %v, want ErrUnsafePath", name, err)
		}
		if d.Has(name) {
			t.Errorf("Has(%q) is true", name)
		}
	}
}
