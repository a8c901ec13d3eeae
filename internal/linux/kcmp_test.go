package linux

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil/require"
)

// TestKcmpSet: of 200 fds of one file, in 50 open file descriptions (each
// dup'ed 3 times), the set finds the 50 descriptions, each at its first
// fd, whatever the order the fds come in.
func TestKcmpSet(t *testing.T) {
	var fds [][]int
	for i := 0; i < 50; i++ {
		f, err := unix.Open("/proc/self/exe", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		group := []int{f}
		for j := 0; j < 3; j++ {
			d, err := unix.Dup(f)
			if err != nil {
				t.Fatal(err)
			}
			group = append(group, d)
		}
		fds = append(fds, group)
	}
	defer func() {
		for _, g := range fds {
			for _, fd := range g {
				unix.Close(fd)
			}
		}
	}()
	pid := os.Getpid()
	var s KcmpSet[int]
	s.Type = KcmpFile
	// Every description's first fd, then every dup: each dup must be
	// found as its description.
	for i, g := range fds {
		_, at, found, err := s.Find(pid, g[0])
		if err != nil {
			if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
				require.SkipOrFail(t, "kcmp (CONFIG_KCMP, and ptrace access to pid %d): %v", pid, err)
			}
			t.Fatal(err)
		}
		if found {
			t.Fatalf("fd %d (description %d) found before it was added", g[0], i)
		}
		s.Insert(at, pid, g[0], i)
	}
	for i, g := range fds {
		for _, fd := range g[1:] {
			v, _, found, err := s.Find(pid, fd)
			if err != nil || !found || v != i {
				t.Errorf("fd %d: found %v description %d (%v), want %d", fd, found, v, err, i)
			}
		}
	}
	if len(s.items) != 50 {
		t.Errorf("%d members, want 50", len(s.items))
	}
}
