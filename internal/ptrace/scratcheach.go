package ptrace

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// MapScratchEach maps a scratch area of size(i) bytes into every task
// ts[i] at once (Each), where the kernel chooses: what MapExecScratch
// does for one, executable so that it can hold SeqCode (EachSeq). A task
// whose kernel or security policy refuses a writable and executable
// mapping (EACCES, EPERM: an LSM's execmem rule) gets a data-only one
// (MapScratch), and its calls are injected one by one. ss[i] is task
// i's, nil where its mmap failed; the error names each failure. The
// caller unmaps those made (UnmapScratchEach), failure or not.
func MapScratchEach(ts []*Task, size func(i int) uint64) (ss []*Scratch, err error) {
	prot := uint64(unix.PROT_READ | unix.PROT_WRITE | unix.PROT_EXEC)
	flags := uint64(unix.MAP_PRIVATE | unix.MAP_ANONYMOUS)
	res, errs, err := Each(ts, unix.SYS_MMAP, func(i int) []uint64 { return []uint64{0, size(i), prot, flags, ^uint64(0), 0} })
	ss = make([]*Scratch, len(ts))
	fails := []error{err}
	for i, t := range ts {
		switch {
		case errors.Is(errs[i], unix.EACCES) || errors.Is(errs[i], unix.EPERM):
			s, err := MapScratch(t, 0, size(i))
			if err != nil {
				fails = append(fails, err)
				continue
			}
			ss[i] = s
		case errs[i] != nil:
			fails = append(fails, fmt.Errorf("map scratch memory in pid %d: %w", t.Tid, errs[i]))
		case res[i] != 0:
			ss[i] = &Scratch{Pid: t.Tid, Addr: res[i], Size: size(i), Exec: true}
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
