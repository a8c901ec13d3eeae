package proc

import (
	"io"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

// rawFile reads a /proc file through its bare descriptor. os.Open makes
// a descriptor non-blocking and offers it to the poller (two fcntl and
// an epoll_ctl more than the open, reads and close a /proc file needs),
// and a dump of 10,000 threads reads tens of thousands of them.
type rawFile struct {
	fd   int
	path string
}

func (f rawFile) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, err := linux.Read(f.fd, b)
	if err != nil {
		return 0, &os.PathError{Op: "read", Path: f.path, Err: err}
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// PFIOWorker is PF_IO_WORKER (include/linux/sched.h): an io_uring
// worker thread (iou-wrk-PID, iou-sqp-PID), the kernel's, which shows in
// /proc/PID/task but cannot be stopped by ptrace.
const PFIOWorker = 0x10

// Tasks lists the thread ids in /proc/PID/task, sorted, without io_uring's
// worker threads: the kernel starts new ones when the process needs them.
func Tasks(pid int) ([]int, error) {
	tids, err := TaskIDs(pid)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(tids, func(tid int) bool { return IOWorker(pid, tid) }), nil
}

// TaskIDs lists every thread id in /proc/PID/task, sorted, io_uring's
// workers included (IOWorker tells them): a caller that lists the
// threads again and again looks only at the ones it has not seen.
func TaskIDs(pid int) ([]int, error) {
	p := path(pid, "task")
	fd, err := linux.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	// Grown up to 256 KiB, ~10,000 entries a call (24 bytes each for
	// 5-digit tids), while the calls fill it: os.ReadDir's 8 KiB would
	// take 30 calls and a DirEntry each for 10,000 threads. It starts
	// small: a tree's dump lists the threads of each of its processes,
	// most of them with one, and fresh memory costs a fault per page on
	// these VMs (~20 µs each: 1.3 ms for 256 KiB).
	buf := make([]byte, 4<<10)
	var tids []int
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "getdents", Path: p, Err: err}
		}
		if n == 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names[:0])
		for _, name := range names {
			tid, err := strconv.Atoi(name)
			if err != nil || tid <= 0 {
				return nil, named(p, syntaxErr("task", 0, "entry %q is not a tid", name))
			}
			tids = append(tids, tid)
		}
		if n > len(buf)/2 && len(buf) < 256<<10 {
			buf = make([]byte, 4*len(buf)) // (ParseDirent copied the names)
		}
	}
	slices.Sort(tids)
	return tids, nil
}

// IOWorker tells whether thread tid of pid is an io_uring worker. It
// reads /proc/PID/task/TID/stat, the thread's own: /proc/TID/stat of a
// thread is the whole process's view, for which the kernel sums the
// times of every thread of the group (do_task_stat with whole=1), so
// reading it for each of N threads costs O(N^2): 10,000 threads spent
// seconds of system time there. A thread that is gone is no worker.
func IOWorker(pid, tid int) bool {
	st, err := ReadTaskStat(pid, tid)
	return err == nil && st.Flags&PFIOWorker != 0
}

// ReadTaskStat reads /proc/PID/task/TID/stat: thread tid's own figures
// (see IOWorker for why not /proc/TID/stat).
func ReadTaskStat(pid, tid int) (*Stat, error) {
	return parseFile(path(pid, "task/"+strconv.Itoa(tid)+"/stat"), ParseStat)
}

// ReadTaskStatus reads /proc/PID/task/TID/status.
func ReadTaskStatus(pid, tid int) (*Status, error) {
	return parseFile(path(pid, "task/"+strconv.Itoa(tid)+"/status"), ParseStatus)
}
