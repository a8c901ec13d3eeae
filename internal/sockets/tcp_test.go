package sockets

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// growSndbuf and restore: the buffer grows by twice the bytes to refill,
// then gets back its size and its lock exactly, so that a send buffer the
// kernel autotuned (no lock) is still autotuned after the restore.
func TestGrowSndbuf(t *testing.T) {
	testutil.RequireRootFor(t, "SO_SNDBUFFORCE needs CAP_NET_ADMIN")
	for _, lock := range []int{0, 1} { // none, SOCK_SNDBUF_LOCK
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if lock != 0 {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 50000); err != nil {
				t.Fatal(err)
			}
		}
		get := func(opt int) int {
			v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		size0, lock0 := get(unix.SO_SNDBUF), get(unix.SO_BUF_LOCK)
		if lock0 != lock {
			t.Fatalf("SO_BUF_LOCK %d before, want %d", lock0, lock)
		}
		const n = 3 << 20
		b, err := growSndbuf(fd, n)
		if err != nil {
			t.Fatal(err)
		}
		if got := get(unix.SO_SNDBUF); got < size0+2*n-1 {
			t.Errorf("lock %d: send buffer %d after growSndbuf(%d) from %d, want %d", lock, got, n, size0, size0+2*n)
		}
		if err := b.restore(fd); err != nil {
			t.Fatal(err)
		}
		if got, gotLock := get(unix.SO_SNDBUF), get(unix.SO_BUF_LOCK); got != size0 || gotLock != lock0 {
			t.Errorf("after restore: send buffer %d, SO_BUF_LOCK %d; want %d, %d", got, gotLock, size0, lock0)
		}
	}
}
