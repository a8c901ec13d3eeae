package files

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRefuse: a dump stops at a refusal, a preflight records it and goes
// on; nil is never recorded.
func TestRefuse(t *testing.T) {
	e1, e2 := errors.New("one"), errors.New("two")
	d := NewTable(DumpOptions{}, nil)
	if d.Refuse(nil) != nil || d.Refuse(e1) != e1 || len(d.Refused) != 0 {
		t.Errorf("a dump's Refuse: %v recorded", d.Refused)
	}
	p := NewTable(DumpOptions{Preflight: true}, nil)
	if p.Refuse(e1) != nil || p.Refuse(nil) != nil || p.Refuse(e2) != nil {
		t.Error("a preflight's Refuse returned an error")
	}
	if len(p.Refused) != 2 || p.Refused[0] != e1 || p.Refused[1] != e2 {
		t.Errorf("a preflight recorded %v, want [one two]", p.Refused)
	}
}

// TestIsTmpfile: an O_TMPFILE file, which --link-remap links again though
// it has no name left, is told by the name the kernel gives it; a file
// that had a name and lost it is not.
func TestIsTmpfile(t *testing.T) {
	dir := t.TempDir()
	tmp, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR, 0o600)
	if err != nil {
		t.Skipf("O_TMPFILE in %s: %v", dir, err)
	}
	defer unix.Close(tmp)
	f, err := os.Create(filepath.Join(dir, "gone"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(f.Name()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		fd   int
		want bool
	}{{tmp, true}, {int(f.Fd()), false}} {
		link := fmt.Sprintf("/proc/self/fd/%d", c.fd)
		target, err := os.Readlink(link)
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(link, &st); err != nil {
			t.Fatal(err)
		}
		name, gone := unlinked(target, &st)
		if !gone || isTmpfile(name, &st) != c.want {
			t.Errorf("%s (inode %d): unlinked %v, isTmpfile %v, want %v", target, st.Ino, gone, isTmpfile(name, &st), c.want)
		}
	}
}
