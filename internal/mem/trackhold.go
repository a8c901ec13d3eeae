package mem

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"
)

// The holder. A userfaultfd's tracking ends when its last fd is closed,
// and stasis exits between the iterations of a chain, so the iteration
// that armed the trackers hands their fds to a small process of its own
// (stasis re-executed with HolderArg, in a session of its own) that
// listens on a unix socket in that iteration's images dir. The next
// iteration, given that dir as --prev-images-dir, connects and takes
// them; the holder then removes its socket and exits, as it does when
// every tracked process has exited. A chain continued from another dir
// than the last one finds no holder there and saves everything: the
// tracking is always relative to the dir that holds it.

// HolderArg is argv[1] of a holder (stasis.Reexec dispatches on it).
const HolderArg = "__stasis-memtrack-holder"

// HolderSocket is the name of the holder's socket in an images dir.
const HolderSocket = "stasis-memtrack.sock"

// maxRights bounds the fds of one SCM_RIGHTS message (SCM_MAX_FD is 253).
const maxRights = 200

type heldTask struct {
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"`
}

type heldMsg struct {
	Tasks []heldTask `json:"tasks"`
	More  bool       `json:"more"`
}

// sockAddr names path's socket through an fd of the dir, which keeps
// the address short whatever the dir's path.
func sockAddr(dir string) (*unix.SockaddrUnix, *os.File, error) {
	d, err := os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	return &unix.SockaddrUnix{Name: fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), HolderSocket)}, d, nil
}

// Hold hands the trackers with a userfaultfd to a new holder listening in
// dir. The caller's copies stay open (close them after).
func Hold(dir string, trs []*Tracker) error {
	var tasks []heldTask
	files := []*os.File{nil}
	for _, t := range trs {
		if t == nil || t.uffd == nil || !t.Armed {
			continue
		}
		tasks = append(tasks, heldTask{Pid: t.Pid, Start: t.Start})
		files = append(files, t.uffd)
	}
	if len(tasks) == 0 {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	sk, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("memory tracking holder: socket: %w", err)
	}
	lf := os.NewFile(uintptr(sk), "holder socket")
	defer lf.Close()
	addr, d, err := sockAddr(abs)
	if err != nil {
		return fmt.Errorf("memory tracking holder in %s: %w", abs, err)
	}
	defer d.Close()
	_ = os.Remove(filepath.Join(abs, HolderSocket)) // a dead holder's
	if err := unix.Bind(sk, addr); err != nil {
		return fmt.Errorf("memory tracking holder: bind %s: %w", filepath.Join(abs, HolderSocket), err)
	}
	if err := unix.Listen(sk, 4); err != nil {
		return fmt.Errorf("memory tracking holder: listen: %w", err)
	}
	files[0] = lf
	js, _ := json.Marshal(tasks)
	cmd := exec.Command("/proc/self/exe", HolderArg, string(js), filepath.Join(abs, HolderSocket))
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		_ = os.Remove(filepath.Join(abs, HolderSocket))
		return fmt.Errorf("memory tracking holder: %w", err)
	}
	go cmd.Wait() //nolint:errcheck // reaped if this process outlives it
	return nil
}

// Take takes the trackers held for the images dir dir: none (nil, nil)
// if no holder listens there.
func Take(dir string) (map[int]*Tracker, error) {
	addr, d, err := sockAddr(dir)
	if err != nil {
		return nil, nil
	}
	defer d.Close()
	sk, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(sk)
	if err := unix.Connect(sk, addr); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
			return nil, nil
		}
		return nil, fmt.Errorf("memory tracking holder in %s: %w", dir, err)
	}
	out := map[int]*Tracker{}
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(maxRights*4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(sk, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil {
			return out, fmt.Errorf("memory tracking holder in %s: %w", dir, err)
		}
		var fds []int
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if r, err := unix.ParseUnixRights(&m); err == nil {
					fds = append(fds, r...)
				}
			}
		}
		var m heldMsg
		if err := json.Unmarshal(buf[:n], &m); err != nil || len(m.Tasks) != len(fds) {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return out, fmt.Errorf("memory tracking holder in %s: bad message", dir)
		}
		for i, t := range m.Tasks {
			out[t.Pid] = AdoptTracker(t.Pid, t.Start, os.NewFile(uintptr(fds[i]), "userfaultfd of pid "+strconv.Itoa(t.Pid)))
		}
		if !m.More {
			return out, nil
		}
	}
}

// RunHolder is the holder's main: args are HolderArg, the tasks (JSON)
// and the socket's path; fd 3 is the listening socket, the userfaultfds
// follow in the order of the tasks.
func RunHolder(args []string) int {
	if len(args) != 3 {
		return 2
	}
	var tasks []heldTask
	if json.Unmarshal([]byte(args[1]), &tasks) != nil {
		return 2
	}
	path := args[2]
	defer os.Remove(path)
	listen := 3
	type held struct {
		t     heldTask
		fd    int
		pidfd int
	}
	var live []*held
	for i, t := range tasks {
		h := &held{t: t, fd: 4 + i, pidfd: -1}
		// A process that is gone, or a pid taken by another since, has
		// nothing left to track.
		if st, err := proc.ReadStat(t.Pid); err == nil && st.StartTime == t.Start {
			if pfd, err := unix.PidfdOpen(t.Pid, 0); err == nil {
				h.pidfd = pfd
				live = append(live, h)
				continue
			}
		}
		unix.Close(h.fd)
	}
	for len(live) > 0 {
		pfds := []unix.PollFd{{Fd: int32(listen), Events: unix.POLLIN}}
		for _, h := range live {
			pfds = append(pfds, unix.PollFd{Fd: int32(h.pidfd), Events: unix.POLLIN})
		}
		if _, err := unix.Poll(pfds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return 1
		}
		var still []*held
		for i, h := range live {
			if pfds[i+1].Revents != 0 {
				unix.Close(h.fd)
				unix.Close(h.pidfd)
				continue
			}
			still = append(still, h)
		}
		live = still
		if pfds[0].Revents == 0 || len(live) == 0 {
			continue
		}
		c, _, err := unix.Accept4(listen, unix.SOCK_CLOEXEC)
		if err != nil {
			continue
		}
		cred, err := unix.GetsockoptUcred(c, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil || (cred.Uid != 0 && int(cred.Uid) != os.Geteuid()) {
			unix.Close(c)
			continue
		}
		for k := 0; k < len(live); k += maxRights {
			part := live[k:min(k+maxRights, len(live))]
			m := heldMsg{More: k+maxRights < len(live)}
			var fds []int
			for _, h := range part {
				m.Tasks = append(m.Tasks, h.t)
				fds = append(fds, h.fd)
			}
			js, _ := json.Marshal(m)
			if err := unix.Sendmsg(c, js, unix.UnixRights(fds...), nil, 0); err != nil {
				break
			}
		}
		unix.Close(c)
		return 0
	}
	return 0
}
