package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
	"golang.org/x/sys/unix"
)

// fpuMode is the widest register set the fpu victim can check on this CPU.
func fpuMode(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	var flags []string
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "flags" {
			flags = strings.Fields(v)
			break
		}
	}
	has := func(f string) bool {
		for _, x := range flags {
			if x == f {
				return true
			}
		}
		return false
	}
	switch {
	case has("avx512f"):
		return "avx512"
	case has("avx"):
		return "avx"
	}
	t.Logf("no AVX in /proc/cpuinfo flags: checking SSE registers only")
	return "sse"
}

// sendPendingUSR2 sends SIGUSR2, which the signals victim blocks, and waits
// until the kernel shows it pending (shared queue, bit 11 of ShdPnd).
func sendPendingUSR2(t *testing.T, v *testutil.Victim) {
	t.Helper()
	v.Signal(t, unix.SIGUSR2)
	testutil.WaitFor(t, 2*time.Second, "SIGUSR2 pending in ShdPnd", func() bool {
		st, err := testutil.Status(v.Pid)
		return err == nil && pendingBit(st["ShdPnd"], int(unix.SIGUSR2))
	})
}

// pendingBit reports whether signal sig is set in a /proc status mask.
func pendingBit(mask string, sig int) bool {
	var m uint64
	for _, c := range mask {
		m <<= 4
		switch {
		case c >= '0' && c <= '9':
			m |= uint64(c - '0')
		case c >= 'a' && c <= 'f':
			m |= uint64(c-'a') + 10
		}
	}
	return m&(1<<(sig-1)) != 0
}

// sendUSR1 sends SIGUSR1 and waits until it has been delivered (no longer
// pending), so that the victim's handler has run before the next step.
func sendUSR1(t *testing.T, v *testutil.Victim) {
	t.Helper()
	v.Signal(t, unix.SIGUSR1)
	testutil.WaitFor(t, 2*time.Second, "SIGUSR1 delivered", func() bool {
		st, err := testutil.Status(v.Pid)
		return err != nil || !pendingBit(st["SigPnd"], int(unix.SIGUSR1)) && !pendingBit(st["ShdPnd"], int(unix.SIGUSR1))
	})
	time.Sleep(20 * time.Millisecond)
}

// copyImages copies the regular files of src that keep accepts into dst
// (links, such as a dump's parent, are left out).
func copyImages(t *testing.T, src, dst string, keep func(os.DirEntry) bool) {
	t.Helper()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || !keep(e) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
