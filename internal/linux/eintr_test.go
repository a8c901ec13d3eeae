package linux

import (
	"errors"
	"os"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil/require"
)

// TestRetry: EINTR is retried, any other result is returned as is.
func TestRetry(t *testing.T) {
	calls := 0
	n, err := retry(func() (int, error) {
		calls++
		if calls < 3 {
			return -1, unix.EINTR
		}
		return 7, nil
	})
	if n != 7 || err != nil || calls != 3 {
		t.Errorf("retry = %d, %v after %d calls; want 7, nil after 3", n, err, calls)
	}
	calls = 0
	if _, err := retry(func() (int, error) { calls++; return -1, unix.EAGAIN }); err != unix.EAGAIN || calls != 1 {
		t.Errorf("retry of EAGAIN = %v after %d calls", err, calls)
	}
}

// TestWrapperErrors: the wrappers' errors name the call and still match
// the errno.
func TestWrapperErrors(t *testing.T) {
	var ws unix.WaitStatus
	_, err := Wait4(1<<30, &ws, unix.WNOHANG)
	var se *os.SyscallError
	if !errors.As(err, &se) || se.Syscall != "wait4" || !errors.Is(err, unix.ECHILD) {
		t.Errorf("wait4 of no child: %v", err)
	}
	if _, err := Read(-1, make([]byte, 1)); !errors.Is(err, unix.EBADF) || !strings.HasPrefix(err.Error(), "read: ") {
		t.Errorf("read of fd -1: %v", err)
	}
	if err := WriteAll(-1, []byte("x")); !errors.Is(err, unix.EBADF) || !strings.HasPrefix(err.Error(), "write: ") {
		t.Errorf("write of fd -1: %v", err)
	}
	_, err = Open("/nonexistent/stasis", unix.O_RDONLY, 0)
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Path != "/nonexistent/stasis" || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("open of a missing file: %v", err)
	}
	var v uint64
	if err := IoctlPtr(-1, "TFD_IOC_SET_TICKS", TfdIocSetTicks, unsafe.Pointer(&v)); !errors.Is(err, unix.EBADF) || !strings.HasPrefix(err.Error(), "ioctl TFD_IOC_SET_TICKS: ") {
		t.Errorf("ioctl on fd -1: %v", err)
	}
	if _, err := RawWait4(1<<30, &ws, unix.WNOHANG); !errors.Is(err, unix.ECHILD) {
		t.Errorf("raw wait4 of no child: %v", err)
	}
}

// TestKcmpEpollTarget: an epoll's item is its target fd, not another
// file; a closed target is EBADF.
func TestKcmpEpollTarget(t *testing.T) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ep)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, p[0], &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		t.Fatal(err)
	}
	pid := os.Getpid()
	same, err := KcmpEpollTarget(pid, ep, p[0], 0)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		require.SkipOrFail(t, "kcmp (CONFIG_KCMP, and ptrace access to pid %d): %v", pid, err)
	}
	if err != nil || !same {
		t.Errorf("item of fd %d: same %v, %v", p[0], same, err)
	}
	// An item registered under p[0] compared with fd p[1]: the kernel
	// finds the item by the number given, so ask with p[1] as the number
	// to see ENOENT (no such item).
	if _, err := KcmpEpollTarget(pid, ep, p[1], 0); !errors.Is(err, unix.ENOENT) {
		t.Errorf("no item for fd %d: %v, want ENOENT", p[1], err)
	}
	if _, err := KcmpEpollTarget(pid, ep, 12345, 0); !errors.Is(err, unix.EBADF) && !errors.Is(err, unix.ENOENT) {
		t.Errorf("closed fd: %v, want EBADF or ENOENT", err)
	}
}

// TestGetRobustList: glibc registers every thread's robust list (Go's
// threads have none); either way the call must answer for a thread of
// ours, and name itself when it fails.
func TestGetRobustList(t *testing.T) {
	if _, _, err := GetRobustList(unix.Gettid()); err != nil {
		t.Errorf("get_robust_list of our own thread: %v", err)
	}
	if _, _, err := GetRobustList(1 << 30); !errors.Is(err, unix.ESRCH) || !strings.HasPrefix(err.Error(), "get_robust_list: ") {
		t.Errorf("get_robust_list of no thread: %v", err)
	}
}
