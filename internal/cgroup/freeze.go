package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Freezer freezes a cgroup for --freeze-cgroup: every task in its tree
// stops at once, so that none forks or clones while the dump seizes
// them, however many there are.
type Freezer struct {
	dir    string
	v2     bool
	was    string // freezer.state before the freeze (v1)
	frozen bool
	// already: the cgroup was frozen before the dump (containerd pauses
	// a task before it checkpoints it); Restore freezes it again.
	already bool
}

// freezeTimeout bounds the wait for a cgroup to report frozen.
const freezeTimeout = 10 * time.Second

// Freeze freezes the cgroup at dir (a path in a mounted hierarchy: a v1
// freezer's directory, with freezer.state, or a v2 one, with
// cgroup.freeze) and waits until every task in it is frozen. A cgroup
// frozen already is taken as it is, as criu does: its tasks are seized
// while frozen, Thaw lets them into their ptrace stops, and Restore
// freezes the cgroup again once the dump has let them go. One still
// FREEZING is refused.
func Freeze(dir string) (*Freezer, error) {
	f := &Freezer{dir: dir}
	st, err := os.ReadFile(filepath.Join(dir, "freezer.state"))
	switch {
	case err == nil:
		f.was = strings.TrimSpace(string(st))
	case errors.Is(err, fs.ErrNotExist):
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.freeze"))
		if err != nil {
			return nil, fmt.Errorf("--freeze-cgroup %s: neither a cgroup v1 freezer (freezer.state) nor a cgroup v2 (cgroup.freeze): %w", dir, ErrMissing)
		}
		f.v2 = true
		f.was = "THAWED"
		if strings.TrimSpace(string(b)) == "1" {
			f.was = "FROZEN"
		}
	default:
		return nil, fmt.Errorf("--freeze-cgroup %s: %w", dir, err)
	}
	if f.was == "FROZEN" {
		f.frozen, f.already = true, true
		return f, nil
	}
	if f.was != "THAWED" {
		return nil, fmt.Errorf("--freeze-cgroup %s: the cgroup is %s already: thaw it, the dump freezes it itself: %w", dir, f.was, ErrNotSupported)
	}
	if err := f.set(true); err != nil {
		return nil, err
	}
	f.frozen = true
	deadline := time.Now().Add(freezeTimeout)
	for {
		done, err := f.isFrozen()
		if err != nil || done {
			if err != nil {
				_ = f.Thaw()
			}
			return f, err
		}
		if time.Now().After(deadline) {
			_ = f.Thaw()
			return nil, fmt.Errorf("--freeze-cgroup %s: not frozen after %v (a task stuck in the kernel?)", dir, freezeTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// State is the freezer state before the freeze, as criu records it.
func (f *Freezer) State() string { return f.was }

// V1 tells whether this is a cgroup v1 freezer, whose state criu keeps
// in cgroup.img.
func (f *Freezer) V1() bool { return !f.v2 }

func (f *Freezer) set(freeze bool) error {
	file, v := filepath.Join(f.dir, "freezer.state"), "THAWED"
	if freeze {
		v = "FROZEN"
	}
	if f.v2 {
		file, v = filepath.Join(f.dir, "cgroup.freeze"), "0"
		if freeze {
			v = "1"
		}
	}
	if err := os.WriteFile(file, []byte(v), 0); err != nil {
		return fmt.Errorf("--freeze-cgroup %s: write %s to %s: %w", f.dir, v, filepath.Base(file), err)
	}
	return nil
}

func (f *Freezer) isFrozen() (bool, error) {
	if !f.v2 {
		b, err := os.ReadFile(filepath.Join(f.dir, "freezer.state"))
		if err != nil {
			return false, fmt.Errorf("--freeze-cgroup %s: %w", f.dir, err)
		}
		return strings.TrimSpace(string(b)) == "FROZEN", nil
	}
	b, err := os.ReadFile(filepath.Join(f.dir, "cgroup.events"))
	if err != nil {
		return false, fmt.Errorf("--freeze-cgroup %s: %w", f.dir, err)
	}
	return strings.Contains(string(b), "frozen 1"), nil
}

// Thaw lets the cgroup run again; once is enough.
func (f *Freezer) Thaw() error {
	if f == nil || !f.frozen {
		return nil
	}
	f.frozen = false
	return f.set(false)
}

// Restore puts back the state the cgroup had before Freeze: frozen again
// if it was frozen then (the tasks the dump let go, or none if it killed
// them), nothing to do otherwise.
func (f *Freezer) Restore() error {
	if f == nil || !f.already {
		return nil
	}
	f.already = false
	return f.set(true)
}

// Tasks lists every thread in the cgroup's tree: tid -> its process.
func (f *Freezer) Tasks() (map[int]int, error) {
	list := "tasks"
	if f.v2 {
		list = "cgroup.threads"
	}
	out := map[int]int{}
	err := filepath.WalkDir(f.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		fh, err := os.Open(filepath.Join(p, list))
		if err != nil {
			return err
		}
		defer fh.Close()
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			tid, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
			if err != nil {
				continue
			}
			out[tid] = tgid(tid)
		}
		return sc.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("--freeze-cgroup %s: list its tasks: %w", f.dir, err)
	}
	return out, nil
}

func tgid(tid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return tid
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Tgid:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return n
			}
		}
	}
	return tid
}
