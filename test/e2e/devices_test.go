package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestDevices: fds on the devices a container has (devices.c): /dev/null,
// zero, random, urandom, full (criu's regular files by path), a pty
// from /dev/ptmx with its slave as the controlling terminal, and
// /dev/tty, its alias; each comes back on the same device with its mode
// and works: in stasis' namespaces, dumped by criu 4.2 too, and in a user namespace (root mapped
// to root, setgroups "deny") with uts and ipc namespaces of its own. criu
// 4.2's outcome on the same victim is logged.
//
// Not parallel: the victim's pty is on the host's devpts, whose index
// its dump frees and its restore needs back; a pty that a parallel test
// opens meanwhile (TestConsoleExternal, TestTTYExternal) takes it.
func TestDevices(t *testing.T) {
	testutil.RequireRoot(t)
	t.Run("criu-4.2", func(t *testing.T) {
		testutil.CRIU(t)
		v := testutil.StartVictim(t, "devices")
		v.WaitReady(t)
		t.Logf("criu 4.2 on the same victim: %s", testutil.CriuOutcome(t, v))
	})
	t.Run("criu-to-stasis", func(t *testing.T) {
		testutil.CRIU(t)
		v := testutil.StartVictim(t, "devices")
		v.WaitReady(t)
		dir := t.TempDir()
		testutil.CriuDump(t, v.Pid, dir, "--network-lock", "nftables")
		v.Reap(t)
		testutil.RestoreDetached(t, dir, v)
		v.TermAndCheck(t)
	})
	for _, tc := range []struct {
		name string
		attr *syscall.SysProcAttr
	}{
		{"host", &syscall.SysProcAttr{Setsid: true}},
		{"userns", &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := testutil.StartVictimWith(t, func(c *exec.Cmd) { c.SysProcAttr = tc.attr }, "devices")
			v.WaitReady(t)
			dir := t.TempDir()
			testutil.Dump(t, v.Pid, dir)
			v.Reap(t)
			testutil.RestoreDetached(t, dir, v)
			v.TermAndCheck(t)
		})
	}
}

// TestEvasiveDevices: a process holds a device opened by a path that now
// names another node of the same device (a /dev made again): the dump
// refuses it, naming the path and --evasive-devices, and leaves the
// process running; with --evasive-devices it is dumped and the restored
// fd is on the same device. A path naming another device is refused even
// so.
func TestEvasiveDevices(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	dir := t.TempDir()
	node, other := filepath.Join(dir, "null"), filepath.Join(dir, "other")
	if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	v := testutil.StartProgram(t, "/bin/sh", "-c", "exec sleep 1000 5<>"+node)
	testutil.WaitFor(t, 5*time.Second, "sleep with the node open at fd 5", func() bool {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/5", v.Pid))
		return l == node && testutil.Comm(v.Pid) == "sleep"
	})
	// Another node bind-mounted over the path: it names another inode,
	// the one the fd holds is still linked.
	over := func(rdev uint64) {
		os.Remove(other)
		if err := unix.Mknod(other, unix.S_IFCHR|0o666, int(rdev)); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount(other, node, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(node, unix.MNT_DETACH) })
	}
	over(unix.Mkdev(1, 5)) // /dev/zero's number
	testutil.AssertContains(t, testutil.DumpFail(t, v.Pid, t.TempDir(), "--evasive-devices"), node, "another file than device 1:3")
	unix.Unmount(node, unix.MNT_DETACH)
	over(unix.Mkdev(1, 3))
	testutil.AssertContains(t, testutil.DumpFail(t, v.Pid, t.TempDir()), node, "--evasive-devices")
	assertRunning(t, v.Pid)
	img := t.TempDir()
	testutil.Dump(t, v.Pid, img, "--evasive-devices")
	v.Reap(t)
	pidfile := filepath.Join(t.TempDir(), "pid")
	if r := testutil.Run(t, 30*time.Second, "restore", "-D", img, "-d", "--pidfile", pidfile, "--evasive-devices"); r.Code != 0 {
		t.Fatalf("restore failed\n%s", r)
	}
	pid := readPidfile(t, pidfile)
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/5", pid), &st); err != nil || st.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("restored fd 5: device %d:%d (%v), want 1:3", unix.Major(st.Rdev), unix.Minor(st.Rdev), err)
	}
}

// TestConsoleExternal: a container's console, as LXC gives it: the
// tree's stdio is a pty slave whose master the runtime (here the test)
// holds outside the tree. The dump takes it with --external
// tty[RDEV:DEV] and the restore with --inherit-fd fd[N]:tty[RDEV:DEV],
// the slave given by the runtime: bytes typed on the master come back
// from the restored cat.
func TestConsoleExternal(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	if _, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS); err != nil {
		t.Fatal(err)
	}
	cat := exec.Command("/bin/cat")
	cat.Stdin, cat.Stdout, cat.Stderr = slave, slave, slave
	cat.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cat.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { cat.Wait(); close(waited) }()
	t.Cleanup(func() { cat.Process.Kill(); <-waited })
	echo := func(what string) {
		t.Helper()
		if _, err := master.WriteString(what + "\n"); err != nil {
			t.Fatal(err)
		}
		var got []byte
		buf := make([]byte, 256)
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(string(got), what) < 2 && time.Now().Before(deadline) {
			master.SetReadDeadline(deadline)
			k, err := master.Read(buf)
			if err != nil {
				break
			}
			got = append(got, buf[:k]...)
		}
		// The terminal echoes the line, then cat writes it.
		if strings.Count(string(got), what) < 2 {
			t.Fatalf("console: %q after typing %q", got, what)
		}
	}
	echo("before")
	var st unix.Stat_t
	if err := unix.Fstat(int(slave.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("tty[%x:%x]", st.Rdev, st.Dev)
	testutil.AssertContains(t, testutil.DumpFail(t, cat.Process.Pid, t.TempDir()), key)
	dir := t.TempDir()
	testutil.Dump(t, cat.Process.Pid, dir, "--external", key)
	<-waited
	pidfile := filepath.Join(t.TempDir(), "pid")
	rs := exec.Command(testutil.StasisBin(t), "restore", "-D", dir, "-d", "--pidfile", pidfile, "--inherit-fd", "fd[3]:"+key)
	rs.ExtraFiles = []*os.File{slave}
	if out, err := rs.CombinedOutput(); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	readPidfile(t, pidfile)
	echo("after")
}
