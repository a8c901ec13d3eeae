package ptrace

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// MapScratchEach maps a scratch area of size bytes into every task of ts
// at once (Each), where the kernel chooses: what MapScratch(t, 0, size)
// does for one. ss[i] is task i's, nil where its mmap failed; the error
// names each failure. The caller unmaps those made (UnmapScratchEach),
// failure or not.
func MapScratchEach(ts []*Task, size uint64) (ss []*Scratch, err error) {
	prot := uint64(unix.PROT_READ | unix.PROT_WRITE)
	flags := uint64(unix.MAP_PRIVATE | unix.MAP_ANONYMOUS)
	res, errs, err := Each(ts, unix.SYS_MMAP, func(int) []uint64 { return []uint64{0, size, prot, flags, ^uint64(0), 0} })
	ss = make([]*Scratch, len(ts))
	fails := []error{err}
	for i, t := range ts {
		switch {
		case errs[i] != nil:
			fails = append(fails, fmt.Errorf("map scratch memory in pid %d: %w", t.Tid, errs[i]))
		case res[i] != 0:
			ss[i] = &Scratch{Pid: t.Tid, Addr: res[i], Size: size}
		}
	}
	return ss, errors.Join(fails...)
}

// UnmapScratchEach removes the scratch areas ss[i] (nil: none) from the
// tasks ts[i] at once. ss[i] is set to nil once unmapped; those left are
// the ones that failed, which the error names.
func UnmapScratchEach(ts []*Task, ss []*Scratch) error {
	var sub []*Task
	var idx []int
	for i, s := range ss {
		if s != nil {
			sub, idx = append(sub, ts[i]), append(idx, i)
		}
	}
	if len(sub) == 0 {
		return nil
	}
	_, errs, err := Each(sub, unix.SYS_MUNMAP, func(j int) []uint64 {
		s := ss[idx[j]]
		return []uint64{s.Addr, s.Size}
	})
	fails := []error{err}
	for j, i := range idx {
		if errs[j] != nil {
			fails = append(fails, fmt.Errorf("munmap scratch in pid %d: %w", ts[i].Tid, errs[j]))
			continue
		}
		if err == nil {
			ss[i] = nil
		}
	}
	return errors.Join(fails...)
}
