// Command gosuper is an e2e victim written in Go that supervises child
// processes: since Go 1.23 every os.Process holds a pidfd of its child
// until Wait, so a Go program with a running child holds pidfds
// (test/e2e, test/victims/README.md).
//
//	gosuper READY
//
// It starts two `sleep 1000` children, and a `sh -c 'exit 7'` child it
// does not wait for (a zombie at the dump, still held by its pidfd). It
// also keeps a pidfd of its own (pidfd_open, PIDFD_NONBLOCK) of a fourth
// child, `true`, that it has waited for: a pidfd of a process that is gone.
// READY is created once the zombie is a zombie. On SIGTERM it checks,
// through the Go API (pidfd_send_signal, waitid(P_PIDFD)), that it still
// supervises the same processes: SIGTERM ends both sleeps and Wait says
// so, Wait gives the zombie's status 7; the gone process's pidfd is
// readable (ended) and refuses signals with ESRCH, and is still
// non-blocking. It prints "PASS" and exits 0, or "FAIL: ..." lines and
// exits 1.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var failures int

func fail(format string, args ...any) {
	failures++
	syscall.Write(2, []byte("FAIL: "+fmt.Sprintf(format, args...)+"\n"))
}

func setupFail(format string, args ...any) {
	syscall.Write(2, []byte("SETUP: "+fmt.Sprintf(format, args...)+"\n"))
	os.Exit(2)
}

func start(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		setupFail("start %s: %v", name, err)
	}
	return cmd
}

func main() {
	if len(os.Args) != 2 {
		setupFail("usage: gosuper READY")
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)

	sleeps := []*exec.Cmd{start("sleep", "1000"), start("sleep", "1000")}
	zombie := start("sh", "-c", "exit 7")
	gone := start("true")
	goneFd, err := unix.PidfdOpen(gone.Process.Pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		setupFail("pidfd_open: %v", err)
	}
	if err := gone.Wait(); err != nil {
		setupFail("wait for true: %v", err)
	}
	for i := 0; ; i++ {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", zombie.Process.Pid))
		if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
			break
		}
		if i == 500 {
			setupFail("sh did not exit")
		}
		time.Sleep(10 * time.Millisecond)
	}
	f, err := os.Create(os.Args[1])
	if err != nil {
		setupFail("create %s: %v", os.Args[1], err)
	}
	f.Close()
	<-term

	for i, c := range sleeps {
		if err := c.Process.Signal(syscall.SIGTERM); err != nil {
			fail("sleep %d (pid %d): signal: %v", i, c.Process.Pid, err)
			continue
		}
		err := c.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
			fail("sleep %d (pid %d): Wait says %v, want it killed by SIGTERM", i, c.Process.Pid, err)
		}
	}
	err = zombie.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		fail("sh (pid %d): Wait says %v, want exit status 7", zombie.Process.Pid, err)
	}
	fds := []unix.PollFd{{Fd: int32(goneFd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 0); n != 1 || err != nil {
		fail("the pidfd of the gone process is not readable: %d %v", n, err)
	}
	if err := unix.PidfdSendSignal(goneFd, 0, nil, 0); !errors.Is(err, unix.ESRCH) {
		fail("signal 0 through the pidfd of the gone process: %v, want ESRCH", err)
	}
	if fl, err := unix.FcntlInt(uintptr(goneFd), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
		fail("the pidfd of the gone process has flags %#o (%v), want O_NONBLOCK", fl, err)
	}
	if failures > 0 {
		os.Exit(1)
	}
	syscall.Write(1, []byte("PASS\n"))
	os.Exit(0)
}
