package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// swrkClient is a criu RPC client that sees every message, which go-criu
// hides (it answers notifications it has no method for, and returns the
// features it sent instead of the reply's): `BIN swrk FD` on one end of a
// socketpair, as go-criu starts it.
type swrkClient struct {
	t   *testing.T
	sk  int
	cmd *exec.Cmd
	// answer, if set, is sent to a notification instead of success.
	answer func(script string) *rpc.CriuReq
}

func startSwrk(t *testing.T, bin string) *swrkClient {
	t.Helper()
	// Both ends close-on-exec, the server's passed as fd 3: tests run in
	// parallel, and a victim forked by another one must not inherit it.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := os.NewFile(uintptr(fds[1]), "swrk-srv")
	cmd := exec.Command(bin, "swrk", "3")
	cmd.ExtraFiles = []*os.File{srv}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Start()
	srv.Close()
	if err != nil {
		t.Fatal(err)
	}
	c := &swrkClient{t: t, sk: fds[0], cmd: cmd}
	t.Cleanup(func() { c.close() })
	return c
}

func connectService(t *testing.T, address string) *swrkClient {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: address}); err != nil {
		t.Fatalf("connect %s: %v", address, err)
	}
	c := &swrkClient{t: t, sk: fd}
	t.Cleanup(func() { c.close() })
	return c
}

func (c *swrkClient) close() {
	if c.sk >= 0 {
		unix.Close(c.sk)
		c.sk = -1
	}
}

// exit waits for the swrk process and returns its exit code.
func (c *swrkClient) exit() int {
	c.t.Helper()
	c.close()
	if c.cmd == nil {
		return 0
	}
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		c.t.Fatalf("swrk pid %d did not exit", c.cmd.Process.Pid)
	}
	return c.cmd.ProcessState.ExitCode()
}

func (c *swrkClient) sendRaw(b []byte) {
	c.t.Helper()
	if _, err := unix.Write(c.sk, b); err != nil {
		c.t.Fatalf("send request: %v", err)
	}
}

// recv reads one reply; nil at EOF.
func (c *swrkClient) recv() *rpc.CriuResp {
	c.t.Helper()
	buf := make([]byte, 1<<16)
	n, err := unix.Read(c.sk, buf)
	if err != nil {
		c.t.Fatalf("read reply: %v", err)
	}
	if n == 0 {
		return nil
	}
	r := &rpc.CriuResp{}
	if err := r.UnmarshalVT(buf[:n]); err != nil {
		c.t.Fatalf("decode reply (%d bytes): %v", n, err)
	}
	return r
}

// call sends req, answers every notification (success unless answer
// says otherwise) and returns the messages seen, one line each, and the
// final reply (nil if the server closed without one).
func (c *swrkClient) call(req *rpc.CriuReq) ([]string, *rpc.CriuResp) {
	c.t.Helper()
	b, err := req.MarshalVT()
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(b)
	var seen []string
	for {
		r := c.recv()
		if r == nil {
			return append(seen, "EOF"), nil
		}
		seen = append(seen, describeResp(r))
		if r.GetType() != rpc.CriuReqType_NOTIFY {
			return seen, r
		}
		ack := &rpc.CriuReq{Type: rpc.CriuReqType_NOTIFY.Enum(), NotifySuccess: proto.Bool(true)}
		if c.answer != nil {
			if a := c.answer(r.GetNotify().GetScript()); a != nil {
				ack = a
			}
		}
		if b, err = ack.MarshalVT(); err != nil {
			c.t.Fatal(err)
		}
		if _, err := unix.Write(c.sk, b); err != nil {
			return append(seen, "client write: "+err.Error()), nil
		}
	}
}

// describeResp names a reply's type, success and the fields it sets, not
// their text: cr_errmsg is left out on success (criu 4.2 sends its first
// logged error line, a warning about RLIMIT_NOFILE, even then).
func describeResp(r *rpc.CriuResp) string {
	s := fmt.Sprintf("%v success=%v", r.GetType(), r.GetSuccess())
	if n := r.GetNotify(); n != nil {
		s += " notify{" + n.GetScript()
		if n.Pid != nil {
			s += " pid=" + strconv.Itoa(int(n.GetPid()))
		}
		s += "}"
	}
	if r.Dump != nil {
		s += fmt.Sprintf(" dump{restored=%v}", r.Dump.GetRestored())
	}
	if r.Restore != nil {
		s += fmt.Sprintf(" restore{pid=%d}", r.Restore.GetPid())
	}
	if f := r.Features; f != nil {
		s += fmt.Sprintf(" features{mem_track:%v lazy_pages:%v pidfd_store:%v}", f.MemTrack != nil, f.LazyPages != nil, f.PidfdStore != nil)
	}
	if r.Version != nil {
		s += " version"
	}
	if r.Ps != nil {
		s += " ps"
	}
	if r.Status != nil {
		s += " status"
	}
	if !r.GetSuccess() {
		if r.CrErrmsg != nil {
			s += " cr_errmsg"
		}
		if r.CrErrno != nil {
			s += " cr_errno"
		}
	}
	return s
}

// withPid replaces the decimal pid in each line by ROOT, so that the
// sequences of two runs compare.
func withPid(lines []string, pid int) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = strings.ReplaceAll(l, "="+strconv.Itoa(pid), "=ROOT")
	}
	return out
}

// dirFd opens dir for a request's images_dir_fd: the fd is the test
// process's, which the server opens through /proc/PEER/fd.
func dirFd(t *testing.T, dir string) int32 {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int32(f.Fd())
}

func dumpReq(t *testing.T, pid int, dir string, leaveRunning bool) *rpc.CriuReq {
	return &rpc.CriuReq{Type: rpc.CriuReqType_DUMP.Enum(), Opts: &rpc.CriuOpts{
		ImagesDirFd: proto.Int32(dirFd(t, dir)), Pid: proto.Int32(int32(pid)),
		LeaveRunning: proto.Bool(leaveRunning), LogLevel: proto.Int32(4), LogFile: proto.String("dump.log"),
		NotifyScripts: proto.Bool(true),
	}}
}

func restoreReq(t *testing.T, dir string) *rpc.CriuReq {
	return &rpc.CriuReq{Type: rpc.CriuReqType_RESTORE.Enum(), Opts: &rpc.CriuOpts{
		ImagesDirFd: proto.Int32(dirFd(t, dir)), RstSibling: proto.Bool(true),
		LogLevel: proto.Int32(4), LogFile: proto.String("restore.log"), NotifyScripts: proto.Bool(true),
	}}
}

func logTail(dir, name string) string {
	b, _ := os.ReadFile(dir + "/" + name)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "--- " + name + " ---\n" + strings.Join(lines, "\n")
}
