package mem

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
)

// Dedup (criu dedup, dump --auto-dedup): the pages a dump of a chain
// saves with their data are dead weight in its parents, which nothing
// restored from this dump reads: their blocks are punched out of the
// parents' pages images (fallocate PUNCH_HOLE, the file keeps its size
// and offsets), up the whole chain.

// DedupStats counts what Dedup freed.
type DedupStats struct {
	Pages uint64 // pages punched out of the parents' pages images
}

// Dedup punches out of the parent chain of the images dir at path every
// page that a pagemap image there holds with data.
func Dedup(path string) (DedupStats, error) {
	var st DedupStats
	dir, err := images.Open(path)
	if err != nil {
		return st, err
	}
	if _, err := os.Lstat(filepath.Join(path, ParentLink)); err != nil {
		return st, nil // the first of a chain: nothing above it
	}
	names, _ := filepath.Glob(filepath.Join(path, "pagemap-*.img"))
	for _, p := range names {
		name := filepath.Base(p)
		var pid int
		if _, err := fmt.Sscanf(name, "pagemap-%d.img", &pid); err != nil {
			continue // shared memory: its pagemap has no parent entries
		}
		n, err := DedupImage(dir, name)
		st.Pages += n
		if err != nil {
			return st, err
		}
	}
	return st, nil
}

// DedupImage is Dedup for one pagemap image of dir; it returns the pages
// punched.
func DedupImage(dir *images.Dir, name string) (uint64, error) {
	p := filepath.Join(dir.Path, name)
	if _, err := os.Lstat(filepath.Join(dir.Path, ParentLink)); err != nil {
		return 0, nil
	}
	r, err := dir.NewReader(name)
	if err != nil {
		return 0, err
	}
	var runs [][2]uint64
	err = r.Must(&pagemap.PagemapHead{})
	for err == nil {
		pe := &pagemap.PagemapEntry{}
		if err = r.Next(pe); err == nil && HasData(pe) {
			runs = append(runs, [2]uint64{pe.GetVaddr(), pe.GetVaddr() + NrPages(pe)*PageSize})
		}
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	r.Close()
	if err != nil {
		return 0, fmt.Errorf("dedup %s: %w", p, err)
	}
	l, err := openParentLevel(dir, name, 1, map[string]bool{})
	if err != nil {
		if errors.Is(err, ErrNoParent) {
			return 0, nil // a process the parent does not have
		}
		return 0, fmt.Errorf("dedup %s: %w", p, err)
	}
	var done uint64
	for _, run := range runs {
		n, err := l.punch(run[0], run[1])
		done += n
		if err != nil {
			return done, fmt.Errorf("dedup %s: %w", p, err)
		}
	}
	return done, nil
}

// punch punches [lo, hi) out of this level's pages image where it has
// their data, and out of its parents where it has them in parent.
func (l *parentLevel) punch(lo, hi uint64) (uint64, error) {
	var done uint64
	k := sort.Search(len(l.entries), func(k int) bool { return l.entries[k].end > lo })
	for ; k < len(l.entries) && l.entries[k].vaddr < hi; k++ {
		e := &l.entries[k]
		a, b := max(lo, e.vaddr), min(hi, e.end)
		switch {
		case e.off >= 0:
			if err := punchFile(l.pages, e.off+int64(a-e.vaddr), int64(b-a)); err != nil {
				return done, err
			}
			done += (b - a) / PageSize
		case e.inParent:
			if l.parent == nil {
				p, err := openParentLevel(l.dir, l.name, l.depth+1, l.seen)
				if err != nil {
					if errors.Is(err, ErrNoParent) {
						continue
					}
					return done, err
				}
				l.parent = p
			}
			n, err := l.parent.punch(a, b)
			done += n
			if err != nil {
				return done, err
			}
		}
	}
	return done, nil
}

func punchFile(path string, off, n int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		return fmt.Errorf("punch %d bytes at %d of %s: %w", n, off, path, err)
	}
	return nil
}
