package files

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventpoll"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fsnotify"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/remote"
)

// Epoll items whose number is not their file any more. The kernel keys
// an item by its file and the fd number it was added with; the number
// may have been closed since (the file living on in a dup, or in another
// task) or taken by another file, and an epoll in flight in a unix
// socket's queue (SCM_RIGHTS) has numbers of whichever task added them.
// The dump finds such an item's file by kcmp(KCMP_EPOLL_TFD) among the
// fds of the tree and records its file id beside the item (criu's format
// has no field for it: fieldEpollTarget, which criu's readers skip). The
// restore adds it under its own number all the same: inside the task,
// the file is put at that number for the epoll_ctl and what was there is
// put back; for an epoll in flight, on a thread of stasis with an fd
// table of its own. criu 4.2 fails such a restore ("Can't add event").

const (
	fieldEpollTarget   = 1501 // EventpollTfdEntry: file id of the item's file (stasis)
	fieldEpollInflight = 1501 // EventpollFileEntry: no task holds it (stasis)
)

func setEpollTarget(it *eventpoll.EventpollTfdEntry, id uint32) {
	r := it.ProtoReflect()
	b := append([]byte{}, r.GetUnknown()...)
	b = protowire.AppendTag(b, fieldEpollTarget, protowire.VarintType)
	r.SetUnknown(protowire.AppendVarint(b, uint64(id)))
}

// unknownVarint is the last value of field num among the unknown fields
// of b, 0 if none.
func unknownVarint(b []byte, num protowire.Number) (uint64, error) {
	var v uint64
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		b = b[l:]
		m := protowire.ConsumeFieldValue(n, typ, b)
		if m < 0 {
			return 0, protowire.ParseError(m)
		}
		if n == num && typ == protowire.VarintType {
			v, _ = protowire.ConsumeVarint(b)
		}
		b = b[m:]
	}
	return v, nil
}

func epollTargetFile(it *eventpoll.EventpollTfdEntry) (uint32, error) {
	v, err := unknownVarint(it.ProtoReflect().GetUnknown(), fieldEpollTarget)
	if err == nil && v > 1<<31 {
		err = fmt.Errorf("file id %d", v)
	}
	return uint32(v), err
}

func setEpollInflight(e *eventpoll.EventpollFileEntry) {
	r := e.ProtoReflect()
	b := append([]byte{}, r.GetUnknown()...)
	b = protowire.AppendTag(b, fieldEpollInflight, protowire.VarintType)
	r.SetUnknown(protowire.AppendVarint(b, 1))
}

// epollInflight says the epoll of file id was dumped in flight: stasis
// adds its items itself.
func (r *Restorer) epollInflight(id uint32) bool {
	e := r.Files[id].GetEpfd()
	if e == nil {
		return false
	}
	v, _ := unknownVarint(e.ProtoReflect().GetUnknown(), fieldEpollInflight)
	return v == 1
}

// epollTargetElsewhere finds the file of item it (the toff-th under its
// number) of the epoll fd among the fds of the tree, and returns its file
// id (see treeFile).
func (t *Table) epollTargetElsewhere(fd *Fd, it *eventpoll.EventpollTfdEntry, toff int) (uint32, bool, error) {
	first := 0
	if fd.Via == nil {
		first = fd.Pid // its own task first
	}
	return t.treeFile(first, func(pid, num int, st *unix.Stat_t) (bool, error) {
		if it.Inode != nil && st.Ino != it.GetInode() {
			return false, nil
		}
		same, err := linux.KcmpEpollTargetOf(pid, num, fd.Pid, fd.Num, int(it.GetTfd()), toff)
		return err == nil && same, nil
	})
}

// treeFile finds an fd of the tree (pid first, if not 0) whose file
// match accepts, and returns its file id, dumping that fd now if it was
// not yet (its task's own dump then finds it the same open file
// description): how a file is found that something else refers to
// without a number of its own (an epoll item, an inotify watch).
func (t *Table) treeFile(first int, match func(pid, num int, st *unix.Stat_t) (bool, error)) (uint32, bool, error) {
	tasks := make([]int, 0, len(t.Tasks)+1)
	for p := range t.Tasks {
		if p != first {
			tasks = append(tasks, p)
		}
	}
	slices.Sort(tasks)
	if first != 0 {
		tasks = append([]int{first}, tasks...)
	}
	for _, pid := range tasks {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue // a thread gone
		}
		for _, e := range ents {
			num, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			var st unix.Stat_t
			if unix.Stat(dir+"/"+e.Name(), &st) != nil {
				continue
			}
			ok, err := match(pid, num, &st)
			if err != nil {
				return 0, false, err
			}
			if !ok {
				continue
			}
			id, err := t.DumpFile(&Fd{Pid: pid, Num: num}, nil)
			if err != nil {
				return 0, false, err
			}
			return id, true, nil
		}
	}
	return 0, false, nil
}

func hasFd(fds []*fdinfo.FdinfoEntry, num int, id uint32) bool {
	for _, fe := range fds {
		if int(fe.GetFd()) == num {
			return fe.GetId() == id
		}
	}
	return false
}

// addUnderNumber runs add (the task's epoll_ctl of item tg) with tg's
// file at tg.Fd in task t, whose fd table is fds: what is at that
// number is moved away meanwhile and put back, with its close-on-exec.
func (r *Restorer) addUnderNumber(t remote.Task, fds []*fdinfo.FdinfoEntry, tg epollTarget, add func() error) error {
	f, err := r.Open(tg.File)
	if err != nil {
		return fmt.Errorf("its file id %d: %w", tg.File, err)
	}
	x, err := t.PassFile(f)
	if err != nil {
		return err
	}
	num := uint64(tg.Fd)
	var occupant *fdinfo.FdinfoEntry
	for _, fe := range fds {
		if int(fe.GetFd()) == tg.Fd {
			occupant = fe
		}
	}
	var saved uint64
	if occupant != nil {
		if saved, err = t.Call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, num, unix.F_DUPFD_CLOEXEC, 0); err != nil {
			return err
		}
	}
	if uint64(x) != num {
		if _, err := t.Call("dup3", unix.SYS_DUP3, uint64(x), num, unix.O_CLOEXEC); err != nil {
			return err
		}
		if _, err := t.Call("close", unix.SYS_CLOSE, uint64(x)); err != nil {
			return err
		}
	}
	addErr := add()
	if occupant == nil {
		_, err = t.Call("close", unix.SYS_CLOSE, num)
	} else {
		var flags uint64
		if occupant.GetFlags()&unix.FD_CLOEXEC != 0 {
			flags = unix.O_CLOEXEC
		}
		if _, err = t.Call("dup3", unix.SYS_DUP3, saved, num, flags); err == nil {
			_, err = t.Call("close", unix.SYS_CLOSE, saved)
		}
	}
	if addErr != nil {
		return addErr
	}
	return err
}

// addEpollItemsHere adds the items of an epoll in flight, ep, from
// stasis: on a thread whose fd table is its own (CLONE_FILES unshared),
// each item's file is put at the item's number for the epoll_ctl. The
// thread ends with the goroutine, locked, its table with it.
func (r *Restorer) addEpollItemsHere(ep *os.File, fe *fdinfo.FileEntry) error {
	targets, err := epollTargets(fe)
	if err != nil {
		return err
	}
	files := make([]*os.File, len(targets))
	for i, tg := range targets {
		if tg.File == 0 {
			return fmt.Errorf("item fd %d has no file id: %w", tg.Fd, images.ErrCorrupt)
		}
		if files[i], err = r.Open(tg.File); err != nil {
			return fmt.Errorf("item fd %d: its file id %d: %w", tg.Fd, tg.File, err)
		}
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread's fd table is not stasis' any more
		if err := unix.Unshare(unix.CLONE_FILES); err != nil {
			done <- os.NewSyscallError("unshare CLONE_FILES", err)
			return
		}
		// Every source above every item's number first, so that no
		// dup3 below replaces one still to be used.
		base := 0
		for _, tg := range targets {
			base = max(base, tg.Fd+1)
		}
		epfd, err := unix.FcntlInt(ep.Fd(), unix.F_DUPFD_CLOEXEC, base)
		if err != nil {
			done <- os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
			return
		}
		from := make([]int, len(targets))
		for i := range targets {
			if from[i], err = unix.FcntlInt(files[i].Fd(), unix.F_DUPFD_CLOEXEC, base); err != nil {
				done <- os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
				return
			}
		}
		for i, tg := range targets {
			{
				if err := unix.Dup3(from[i], tg.Fd, unix.O_CLOEXEC); err != nil {
					done <- fmt.Errorf("item fd %d: %w", tg.Fd, os.NewSyscallError("dup3", err))
					return
				}
			}
			ev := unix.EpollEvent{Events: tg.Events, Fd: int32(uint32(tg.Data)), Pad: int32(uint32(tg.Data >> 32))}
			if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, tg.Fd, &ev); err != nil {
				done <- fmt.Errorf("item fd %d: %w", tg.Fd, os.NewSyscallError("epoll_ctl", err))
				return
			}
		}
		done <- nil
	}()
	return <-done
}

// treeFileByInode finds an fd of the tree on inode ino of the device
// the kernel calls sdev (fdinfo's s_dev).
func (t *Table) treeFileByInode(sdev uint32, ino uint64) (uint32, bool, error) {
	return t.treeFile(0, func(_, _ int, st *unix.Stat_t) (bool, error) {
		return st.Ino == ino && kdev(unix.Major(st.Dev), unix.Minor(st.Dev)) == sdev, nil
	})
}

// fieldWatchFile is the file id of a watched file deleted since, open in
// the tree (InotifyWdEntry; stasis, criu's readers skip it).
const fieldWatchFile = 1501

func setWatchFile(w *fsnotify.InotifyWdEntry, id uint32) {
	r := w.ProtoReflect()
	b := append([]byte{}, r.GetUnknown()...)
	b = protowire.AppendTag(b, fieldWatchFile, protowire.VarintType)
	r.SetUnknown(protowire.AppendVarint(b, uint64(id)))
}

func watchFile(w *fsnotify.InotifyWdEntry) (uint32, error) {
	v, err := unknownVarint(w.ProtoReflect().GetUnknown(), fieldWatchFile)
	if err == nil && v > 1<<31 {
		err = fmt.Errorf("file id %d", v)
	}
	return uint32(v), err
}
