package ptrace

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// tracerEnv makes the test binary a tracer that seizes a pid, injects
// calls and then waits to be killed (TestTracerDeath): a tracer's death
// can only be tested from another process.
const tracerEnv = "STASIS_PTRACE_TEST_TRACER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(tracerEnv); spec != "" {
		os.Exit(tracerMain(spec))
	}
	code := m.Run()
	testutil.RemoveBuilds()
	os.Exit(code)
}

// tracerMain seizes the pid of spec "PID[,signal]", injects getpid three
// times and runs a call table, sends the task SIGUSR1 if asked, says "ready" and sleeps until it
// is killed.
func tracerMain(spec string) int {
	f := strings.Split(spec, ",")
	pid, _ := strconv.Atoi(f[0])
	err := RunLocked(func() error {
		t, err := seizeForTest(pid)
		if err != nil {
			return err
		}
		for i := 0; i < 3; i++ {
			if r, err := t.Syscall(unix.SYS_GETPID); err != nil || int(r) != pid {
				return fmt.Errorf("getpid in %d: %d, %v", pid, r, err)
			}
		}
		// A call table too (EachSeq): it must leave nothing behind
		// either (mask, SIGTRAP handler, pending signals, trap flag).
		t.TrapCaught = true // the sleeper has a SIGTRAP handler
		scr, err := MapExecScratch(t, 4096)
		if err != nil {
			return err
		}
		tab := make([]byte, 2*SeqEntrySize)
		PutSeq(tab, []SeqCall{{Nr: unix.SYS_GETPID}, {Nr: unix.SYS_PRCTL, Args: [6]uint64{unix.PR_GET_PDEATHSIG, scr.Addr + 512}}})
		if _, err := scr.Put(0, append(append([]byte(nil), SeqCode...), make([]byte, 256-len(SeqCode))...)); err != nil {
			return err
		}
		if _, err := scr.Put(256, tab); err != nil {
			return err
		}
		if err := EachSeq([]*Task{t}, []Seq{{Code: scr.Addr, Addr: scr.Addr + 256, N: 2}}); err != nil {
			return err
		}
		if err := scr.Unmap(t); err != nil {
			return err
		}
		if len(f) > 1 && f[1] == "signal" {
			// Queued while the task is held: delivered once it runs.
			if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
				return err
			}
		}
		fmt.Println("ready")
		time.Sleep(time.Hour)
		return nil
	})
	fmt.Println("tracer:", err)
	return 1
}

// seizeForTest seizes pid and finds the syscall instruction of its vDSO.
func seizeForTest(pid int) (*Task, error) {
	maps, err := testutil.Maps(pid)
	if err != nil {
		return nil, err
	}
	var lo, hi uint64
	for _, m := range maps {
		if m.Path == "[vdso]" {
			r := strings.Split(m.Range, "-")
			lo, _ = strconv.ParseUint(r[0], 16, 64)
			hi, _ = strconv.ParseUint(r[1], 16, 64)
		}
	}
	if hi == 0 {
		return nil, fmt.Errorf("pid %d has no [vdso]", pid)
	}
	ip, err := FindSyscallInsn(pid, lo, hi)
	if err != nil {
		return nil, err
	}
	t, _, err := SeizeAndStop(pid)
	if err != nil {
		return nil, err
	}
	t.SyscallIP = ip
	return t, nil
}

// sleeper is a running test/victims/sleeper.c.
type sleeper struct {
	cmd   *exec.Cmd
	pid   int
	mode  string
	ms    int
	feed  *os.File // write end of its fd 3 (read and epoll modes)
	lines chan string
	mu    sync.Mutex
	all   []string
}

// sleepCalls are the syscalls each mode blocks in.
var sleepCalls = map[string][]int{
	"nanosleep": {unix.SYS_CLOCK_NANOSLEEP},
	"read":      {unix.SYS_READ},
	"futex":     {unix.SYS_FUTEX},
	"epoll":     {unix.SYS_EPOLL_WAIT, unix.SYS_EPOLL_PWAIT},
}

func startSleeper(t *testing.T, mode string, ms int) *sleeper {
	t.Helper()
	bin := testutil.BuildVictim(t, "sleeper")
	ready := filepath.Join(t.TempDir(), "ready")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, ready, mode, strconv.Itoa(ms))
	cmd.ExtraFiles = []*os.File{r}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = errW
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	errW.Close()
	s := &sleeper{cmd: cmd, pid: cmd.Process.Pid, mode: mode, ms: ms, feed: w, lines: make(chan string, 1000)}
	t.Cleanup(func() {
		_ = unix.Kill(s.pid, unix.SIGKILL)
		_ = s.cmd.Wait()
		w.Close()
	})
	read := func(rd io.Reader) {
		sc := bufio.NewScanner(rd)
		for sc.Scan() {
			s.mu.Lock()
			s.all = append(s.all, sc.Text())
			s.mu.Unlock()
			s.lines <- sc.Text()
		}
	}
	go read(out)
	go read(errR)
	testutil.WaitFor(t, 10*time.Second, "sleeper ready", func() bool {
		_, err := os.Stat(ready)
		return err == nil
	})
	s.waitBlocked(t)
	return s
}

// waitBlocked waits until the sleeper sleeps in its system call.
func (s *sleeper) waitBlocked(t *testing.T) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "sleeper blocked in its call", func() bool {
		nr, err := testutil.CurrentSyscall(s.pid)
		if err != nil {
			return false
		}
		for _, want := range sleepCalls[s.mode] {
			if nr == want {
				return true
			}
		}
		return false
	})
}

// expect waits for a line starting with prefix; any FAIL line fails the test.
func (s *sleeper) expect(t *testing.T, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l := <-s.lines:
			if strings.HasPrefix(l, "FAIL") || strings.HasPrefix(l, "SETUP") {
				t.Fatalf("sleeper (%s) says: %s", s.mode, l)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-deadline:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("sleeper (%s): no %q line within %v; it said %q", s.mode, prefix, timeout, s.all)
			return ""
		}
	}
}

// checkAlive proves the sleeper still works: it wakes on time (or reads
// a byte), answers SIGUSR1 (whose handler has run usr1 times before), and
// passes its own checks on SIGTERM.
func (s *sleeper) checkAlive(t *testing.T, usr1 int) {
	t.Helper()
	testutil.AssertRunning(t, s.pid)
	timeout := 5*time.Second + time.Duration(s.ms)*time.Millisecond
	wake := func() {
		if s.mode == "read" || s.mode == "epoll" {
			if _, err := s.feed.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			s.expect(t, "byte", timeout)
			return
		}
		l := s.expect(t, "tick", timeout)
		var n, slept int
		if _, err := fmt.Sscanf(l, "tick %d %d", &n, &slept); err != nil || slept < s.ms {
			t.Fatalf("sleeper (%s): %q: a sleep of %d ms ended early", s.mode, l, s.ms)
		}
	}
	wake()
	if err := unix.Kill(s.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if s.mode == "read" {
		// SA_RESTART: the read goes on until there is a byte.
		if _, err := s.feed.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if l, want := s.expect(t, "usr1", timeout), fmt.Sprintf("usr1 %d", usr1+1); l != want {
		t.Errorf("sleeper (%s) says %q, want %q: a signal was lost or delivered twice", s.mode, l, want)
	}
	if err := unix.Kill(s.pid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	s.expect(t, "PASS", 10*time.Second)
	if err := s.cmd.Wait(); err != nil {
		t.Fatalf("sleeper (%s): %v", s.mode, err)
	}
}

// status returns fields of /proc/PID/status.
func status(t *testing.T, pid int, keys ...string) map[string]string {
	t.Helper()
	st, err := testutil.Status(pid)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range keys {
		out[k] = st[k]
	}
	return out
}

var modes = []string{"nanosleep", "read", "futex", "epoll"}

// TestInjectGetpid injects calls into a task sleeping in nanosleep and
// checks what it rests on between calls: its own registers and mask, no
// signal dequeued (one sent while it is held stays queued and is delivered
// once, after the detach), its SIGTRAP handler untouched.
func TestInjectGetpid(t *testing.T) {
	s := startSleeper(t, "nanosleep", 200)
	before := status(t, s.pid, "SigBlk", "SigCgt")
	err := RunLocked(func() error {
		tr, err := seizeForTest(s.pid)
		if err != nil {
			return err
		}
		if int64(tr.Base.Orig_rax) != unix.SYS_CLOCK_NANOSLEEP || -int64(tr.Base.Rax) != 516 {
			t.Errorf("seized in orig_rax %d rax %d, want clock_nanosleep and -ERESTART_RESTARTBLOCK", int64(tr.Base.Orig_rax), int64(tr.Base.Rax))
		}
		if err := unix.Kill(s.pid, unix.SIGUSR1); err != nil {
			return err
		}
		if got, err := tr.Syscall(unix.SYS_GETPID); err != nil || int(got) != s.pid {
			t.Errorf("getpid = %d, %v; want %d", got, err, s.pid)
		}
		if got, err := tr.Syscall(unix.SYS_GETPPID); err != nil || int(got) != os.Getpid() {
			t.Errorf("getppid = %d, %v; want %d", got, err, os.Getpid())
		}
		if _, err := tr.Syscall(unix.SYS_CLOSE, 12345); err != unix.EBADF {
			t.Errorf("close(12345) = %v, want EBADF", err)
		}
		regs, err := GetRegs(s.pid)
		if err != nil {
			return err
		}
		if regs != tr.Base {
			t.Errorf("registers after a call: %+v, want those of the seize %+v", regs, tr.Base)
		}
		if m, err := GetSigmask(s.pid); err != nil || m != tr.Blocked {
			t.Errorf("mask after a call %#x (%v), want the task's own %#x", m, err, tr.Blocked)
		}
		if tr.Signals != nil {
			t.Errorf("signals dequeued during the calls: %v", tr.Signals)
		}
		if st := status(t, s.pid, "ShdPnd"); st["ShdPnd"] != "0000000000000200" {
			t.Errorf("ShdPnd %s while held, want SIGUSR1 (0x200) queued", st["ShdPnd"])
		}
		return Detach(s.pid, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	if l := s.expect(t, "usr1", 5*time.Second); l != "usr1 1" {
		t.Errorf("after the detach the sleeper says %q, want \"usr1 1\"", l)
	}
	if after := status(t, s.pid, "SigBlk", "SigCgt"); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("status after the injections %v, before %v (a SIGTRAP handler reset?)", after, before)
	}
	s.checkAlive(t, 1)
}

// TestInjectIntoSleeps injects calls into a task blocked in each kind of
// sleep, detaches (as a dump with -R does) and checks that it sleeps on
// correctly: the whole timeout, no error from the interrupted call.
func TestInjectIntoSleeps(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startSleeper(t, mode, 300)
			before := status(t, s.pid, "SigBlk", "SigCgt", "SigPnd", "ShdPnd")
			err := RunLocked(func() error {
				tr, err := seizeForTest(s.pid)
				if err != nil {
					return err
				}
				for i := 0; i < 5; i++ {
					if got, err := tr.Syscall(unix.SYS_GETPID); err != nil || int(got) != s.pid {
						return fmt.Errorf("getpid = %d, %v", got, err)
					}
				}
				return Detach(s.pid, 0)
			})
			if err != nil {
				t.Fatal(err)
			}
			if after := status(t, s.pid, "SigBlk", "SigCgt", "SigPnd", "ShdPnd"); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("status after %v, before %v", after, before)
			}
			s.checkAlive(t, 0)
		})
	}
}

// TestDetachUntouched seizes a task blocked in read, injects a call and
// detaches, then seizes it again: it must be back in the same read
// with the same registers, mask and state.
func TestDetachUntouched(t *testing.T) {
	s := startSleeper(t, "read", 0)
	before := status(t, s.pid, "SigBlk", "SigCgt", "State")
	var first unix.PtraceRegs
	var mask uint64
	err := RunLocked(func() error {
		tr, err := seizeForTest(s.pid)
		if err != nil {
			return err
		}
		first, mask = tr.Base, tr.Blocked
		if _, err := tr.Syscall(unix.SYS_GETPID); err != nil {
			return err
		}
		return Detach(s.pid, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.waitBlocked(t)
	if after := status(t, s.pid, "SigBlk", "SigCgt", "State"); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("status after %v, before %v", after, before)
	}
	err = RunLocked(func() error {
		tr, _, err := SeizeAndStop(s.pid)
		if err != nil {
			return err
		}
		if tr.Base != first {
			t.Errorf("registers at the second seize %+v, at the first %+v", tr.Base, first)
		}
		if tr.Blocked != mask {
			t.Errorf("mask at the second seize %#x, at the first %#x", tr.Blocked, mask)
		}
		return Detach(s.pid, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.checkAlive(t, 0)
}

// TestSyscallOffTracer: an injected call from a thread other than the one
// that seized the task fails at once with ErrNotTracer, without touching
// the task, and the tracer thread can still use it.
func TestSyscallOffTracer(t *testing.T) {
	s := startSleeper(t, "read", 0)
	err := RunLocked(func() error {
		tr, err := seizeForTest(s.pid)
		if err != nil {
			return err
		}
		errc := make(chan error, 1)
		// Another locked goroutine is certainly on another thread.
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			_, err := tr.Syscall(unix.SYS_GETPID)
			errc <- err
		}()
		if err := <-errc; !errors.Is(err, ErrNotTracer) {
			t.Errorf("getpid from another thread: %v, want ErrNotTracer", err)
		}
		if got, err := tr.Syscall(unix.SYS_GETPID); err != nil || int(got) != s.pid {
			t.Errorf("getpid on the tracer thread afterwards = %d, %v; want %d", got, err, s.pid)
		}
		return Detach(s.pid, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.checkAlive(t, 0)
}

// TestTracerDeath kills a tracer (another process) right after it injected
// calls into a sleeping task, with and without a signal queued to the task
// meanwhile: the task must run on as if nothing had happened, the signal
// handled once.
func TestTracerDeath(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range modes {
		for _, sig := range []bool{false, true} {
			name, spec, usr1 := mode, "", 0
			if sig {
				name, spec, usr1 = mode+"/signal", ",signal", 1
			}
			t.Run(name, func(t *testing.T) {
				s := startSleeper(t, mode, 300)
				before := status(t, s.pid, "SigBlk", "SigCgt", "SigPnd", "ShdPnd")
				tracer := exec.Command(self, "-test.run=^$")
				tracer.Env = append(os.Environ(), tracerEnv+"="+strconv.Itoa(s.pid)+spec)
				out, err := tracer.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				tracer.Stderr = os.Stderr
				if err := tracer.Start(); err != nil {
					t.Fatal(err)
				}
				// Runs before the sleeper's cleanup: a traced task's exit
				// reaches its parent only once the tracer is gone.
				t.Cleanup(func() { _ = tracer.Process.Kill(); _ = tracer.Wait() })
				line, _ := bufio.NewReader(out).ReadString('\n')
				if line != "ready\n" {
					t.Fatalf("tracer said %q", line)
				}
				// TracerPid is the tracer's thread, not its pid.
				if st := status(t, s.pid, "TracerPid"); st["TracerPid"] == "0" {
					t.Fatalf("pid %d is not traced by the tracer %d", s.pid, tracer.Process.Pid)
				}
				if err := unix.Kill(tracer.Process.Pid, unix.SIGKILL); err != nil {
					t.Fatal(err)
				}
				_ = tracer.Wait()
				testutil.AssertRunning(t, s.pid)
				if usr1 > 0 {
					if s.mode == "read" {
						// SA_RESTART: the handler runs, the read goes on.
						if _, err := s.feed.Write([]byte("x")); err != nil {
							t.Fatal(err)
						}
					}
					if l := s.expect(t, "usr1", 5*time.Second); l != "usr1 1" {
						t.Errorf("sleeper (%s) says %q, want \"usr1 1\"", mode, l)
					}
				}
				if after := status(t, s.pid, "SigBlk", "SigCgt", "SigPnd", "ShdPnd"); fmt.Sprint(after) != fmt.Sprint(before) {
					t.Errorf("status after %v, before %v", after, before)
				}
				s.checkAlive(t, usr1)
			})
		}
	}
}

// BenchmarkInject measures one injected getpid into a sleeping task, as
// the dump does it (PTRACE_SYSCALL, mask and registers put back) and as
// the restore does it (one single-step).
func BenchmarkInject(b *testing.B) {
	for _, how := range []string{"seized", "single-step"} {
		b.Run(how, func(b *testing.B) {
			cmd := exec.Command("sleep", "1000")
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			time.Sleep(50 * time.Millisecond)
			err := RunLocked(func() error {
				tr, err := seizeForTest(cmd.Process.Pid)
				if err != nil {
					return err
				}
				tr.seized = how != "single-step"
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := tr.Syscall(unix.SYS_GETPID); err != nil {
						return err
					}
				}
				b.StopTimer()
				if err := tr.Restore(); err != nil {
					return err
				}
				return Detach(tr.Tid, 0)
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}

// TestInjectIntoStopped: a task that was stopped (SIGSTOP) when seized
// runs injected calls and, detached with its stop signal as the dump does,
// is stopped again; SIGCONT lets it sleep on correctly.
func TestInjectIntoStopped(t *testing.T) {
	s := startSleeper(t, "nanosleep", 200)
	if err := unix.Kill(s.pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "sleeper stopped", func() bool {
		return strings.HasPrefix(status(t, s.pid, "State")["State"], "T")
	})
	time.Sleep(50 * time.Millisecond)
	for len(s.lines) > 0 { // said before the stop
		if l := <-s.lines; !strings.HasPrefix(l, "tick") {
			t.Fatalf("sleeper says %q", l)
		}
	}
	err := RunLocked(func() error {
		tr, err := seizeForTest(s.pid)
		if err != nil {
			return err
		}
		if got, err := tr.Syscall(unix.SYS_GETPID); err != nil || int(got) != s.pid {
			return fmt.Errorf("getpid = %d, %v", got, err)
		}
		return Detach(s.pid, int(unix.SIGSTOP))
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if st := status(t, s.pid, "State", "TracerPid"); !strings.HasPrefix(st["State"], "T") || st["TracerPid"] != "0" {
		t.Fatalf("after the detach: %v, want stopped and untraced", st)
	}
	select {
	case l := <-s.lines:
		t.Fatalf("the stopped sleeper said %q", l)
	default:
	}
	if err := unix.Kill(s.pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	s.checkAlive(t, 0)
}
