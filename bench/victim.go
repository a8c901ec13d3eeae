package main

import (
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

//go:embed victim.c
var victimSource []byte

func buildVictim(tmp string) (string, error) {
	src := filepath.Join(tmp, "victim.c")
	bin := filepath.Join(tmp, "victim")
	if err := os.WriteFile(src, victimSource, 0o644); err != nil {
		return "", err
	}
	out, err := exec.Command("gcc", "-O2", "-Wall", "-o", bin, src).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("gcc victim.c: %v\n%s", err, out)
	}
	return bin, nil
}

// live holds the pids bench started or adopted and must kill on exit.
var live struct {
	sync.Mutex
	pids map[int]bool
}

func track(pid int, on bool) {
	live.Lock()
	defer live.Unlock()
	if live.pids == nil {
		live.pids = map[int]bool{}
	}
	if on {
		live.pids[pid] = true
	} else {
		delete(live.pids, pid)
	}
}

func tracked(pid int) bool {
	live.Lock()
	defer live.Unlock()
	return live.pids[pid]
}

// killLive kills, by pid, every victim bench still owns.
func killLive() {
	live.Lock()
	defer live.Unlock()
	for pid := range live.pids {
		_ = unix.Kill(pid, unix.SIGKILL)
		reap(pid)
	}
	live.pids = nil
}

// victim is one started victim process and, after a restore, its
// restored copy (same pid, then a child of bench by adoption).
type victim struct {
	cmd    *exec.Cmd
	pid    int
	dir    string // its cwd: ready, ack, ok, bad appear there
	notify int    // inotify fd watching dir
}

func startVictim(bin, dir string, size int64) (*victim, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ino, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if _, err := unix.InotifyAddWatch(ino, dir, unix.IN_CLOSE_WRITE); err != nil {
		unix.Close(ino)
		return nil, err
	}
	cmd := exec.Command(bin, strconv.FormatInt(size, 10))
	cmd.Dir = dir
	// Stdin, Stdout, Stderr nil: /dev/null. Own session, so that stasis
	// dumps the session leader with it.
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		unix.Close(ino)
		return nil, err
	}
	v := &victim{cmd: cmd, pid: cmd.Process.Pid, dir: dir, notify: ino}
	track(v.pid, true)
	if err := v.await("ready", 10*time.Minute); err != nil {
		v.close()
		return nil, err
	}
	return v, nil
}

// await waits until the victim has created and closed name.
func (v *victim) await(name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 4096)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("victim %d: no %s after %v", v.pid, name, timeout)
		}
		fds := []unix.PollFd{{Fd: int32(v.notify), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(min(left, 100*time.Millisecond)/time.Millisecond)+1)
		if err != nil && err != unix.EINTR {
			return err
		}
		if n <= 0 {
			if !alive(v.pid) {
				return fmt.Errorf("victim %d died before creating %s", v.pid, name)
			}
			continue
		}
		k, err := linux.Read(v.notify, buf)
		if errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			return err
		}
		for off := 0; off+16 <= k; {
			l := int(binary.LittleEndian.Uint32(buf[off+12:]))
			got := strings.TrimRight(string(buf[off+16:off+16+l]), "\x00")
			off += 16 + l
			if got == name {
				return nil
			}
		}
	}
}

// signal sends sig and waits for one of the reply files.
func (v *victim) ask(sig unix.Signal, reply string, timeout time.Duration) error {
	_ = os.Remove(filepath.Join(v.dir, reply))
	v.drain()
	if err := unix.Kill(v.pid, sig); err != nil {
		return fmt.Errorf("signal victim %d: %w", v.pid, err)
	}
	return v.await(reply, timeout)
}

// drain drops the events of files created before the question.
func (v *victim) drain() {
	buf := make([]byte, 4096)
	for {
		if _, err := linux.Read(v.notify, buf); err != nil {
			return
		}
	}
}

// verify asks the (restored) victim to check its whole memory pattern.
func (v *victim) verify() error {
	for _, f := range []string{"ok", "bad"} {
		_ = os.Remove(filepath.Join(v.dir, f))
	}
	if err := unix.Kill(v.pid, unix.SIGUSR2); err != nil {
		return fmt.Errorf("signal victim %d: %w", v.pid, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if exists(filepath.Join(v.dir, "ok")) {
			return nil
		}
		if exists(filepath.Join(v.dir, "bad")) {
			return fmt.Errorf("restored victim %d reports its memory pattern is wrong", v.pid)
		}
		if !alive(v.pid) {
			return fmt.Errorf("restored victim %d died during its memory check", v.pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("restored victim %d: no memory check result", v.pid)
}

// reapDumped waits for the original victim that stasis dump killed: its
// zombie would keep the pid restore needs.
func (v *victim) reapDumped() error {
	err := v.cmd.Wait()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		// Killed by the dump: expected.
	case err != nil && !errors.Is(err, unix.ECHILD) && !strings.Contains(err.Error(), "no child"):
		return fmt.Errorf("reap dumped victim %d: %w", v.pid, err)
	}
	// In the in-process profile bench is also the tracer, and stasis
	// reaps the task itself; either way the pid must be gone now.
	for i := 0; alive(v.pid); i++ {
		if i > 500 {
			return fmt.Errorf("dumped victim %d still exists", v.pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	track(v.pid, false)
	return nil
}

// killRestored ends the restored copy, a child of bench by adoption.
func (v *victim) killRestored() {
	_ = unix.Kill(v.pid, unix.SIGKILL)
	reap(v.pid)
	track(v.pid, false)
}

func (v *victim) close() {
	if tracked(v.pid) && alive(v.pid) {
		_ = unix.Kill(v.pid, unix.SIGKILL)
		if v.cmd.ProcessState == nil {
			_ = v.cmd.Wait()
		}
		reap(v.pid)
	}
	track(v.pid, false)
	unix.Close(v.notify)
	os.RemoveAll(v.dir)
}

func reap(pid int) {
	var ws unix.WaitStatus
	linux.Wait4(pid, &ws, 0)
}

// alive is true while pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
