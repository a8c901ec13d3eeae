package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventpoll"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/remote"
)

func init() {
	Register(&Kind{Name: "eventpoll", Type: fdinfo.FdTypes_EVENTPOLL,
		Dump: func(t *Table, fd *Fd) (*fdinfo.FileEntry, error) { return t.dumpEpoll(fd) },
		Open: func(r *Restorer, fe *fdinfo.FileEntry) (*os.File, error) { return r.openEpoll(fe) }})
}

// DumpEpoll returns the entry of an epoll fd with one EventpollTfdEntry per
// watched item, as criu 4 writes them (inside the EventpollFileEntry, not
// in the old eventpoll-tfd.img).
//
// An item names its target by the fd number it was added with, and the
// restore adds it again by that number inside the task. So each item's
// target must still be that fd of pid: kcmp(KCMP_EPOLL_TFD) checks it. An
// item whose fd was closed (the file living on in a dup or in another
// task) or reused for another file is refused with ErrUnsupported.
func DumpEpoll(pid, fd int, id uint32, fi *proc.Fdinfo) (*fdinfo.FileEntry, error) {
	return dumpEpoll(nil, &Fd{Pid: pid, Num: fd, ID: id, Info: fi})
}

func (t *Table) dumpEpoll(fd *Fd) (*fdinfo.FileEntry, error) { return dumpEpoll(t, fd) }

// dumpEpoll is DumpEpoll; with a table, an item whose number was closed
// or taken by another file, or any item of an epoll in flight (stasis
// holds it: its numbers are those of a task that sent it), is found by
// kcmp among the fds of the tree (epollTargetElsewhere) and records the
// file id of its target (fieldEpollTarget).
func dumpEpoll(t *Table, fd *Fd) (*fdinfo.FileEntry, error) {
	pid, id := fd.Pid, fd.ID
	items, err := parseEpollItems(fd.Info)
	if err != nil {
		return nil, fmt.Errorf("dump fd %d of pid %d (eventpoll): %w", fd.Num, pid, err)
	}
	inflight := fd.Via != nil // stasis holds it: a file in flight
	// Items are printed in the order of the kernel's tree, the order in
	// which kcmp counts items registered under the same number.
	seen := map[uint32]int{}
	for _, it := range items {
		tfd := it.GetTfd()
		toff := seen[tfd]
		seen[tfd]++
		it.Id = proto.Uint32(id)
		same := false
		if !inflight {
			same, err = linux.KcmpEpollTarget(pid, fd.Num, int(tfd), toff)
			if err != nil && !errors.Is(err, unix.EBADF) {
				return nil, fmt.Errorf("dump fd %d of pid %d (eventpoll): compare item %d with fd %d: %w",
					fd.Num, pid, tfd, tfd, err)
			}
		}
		if same {
			continue
		}
		if t != nil {
			tid, found, err := t.epollTargetElsewhere(fd, it, toff)
			if err != nil {
				return nil, fmt.Errorf("dump fd %d of pid %d (eventpoll): find the file of item %d: %w", fd.Num, pid, tfd, err)
			}
			if found {
				setEpollTarget(it, tid)
				continue
			}
		}
		if errors.Is(err, unix.EBADF) || inflight {
			return nil, fmt.Errorf("dump fd %d of pid %d (eventpoll): it watches fd %d, closed since, whose file no fd of the tree holds: %w",
				fd.Num, pid, tfd, ErrUnsupported)
		}
		return nil, fmt.Errorf("dump fd %d of pid %d (eventpoll): it watches a file added as fd %d, which is now another file: %w",
			fd.Num, pid, tfd, ErrUnsupported)
	}
	e := &eventpoll.EventpollFileEntry{
		Id:    proto.Uint32(id),
		Flags: proto.Uint32(anonFlags(fd.Info)),
		Fown:  AnonFown(),
		Tfd:   items,
	}
	if inflight {
		setEpollInflight(e)
	}
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_EVENTPOLL.Enum(), Id: proto.Uint32(id), Epfd: e}, nil
}

// parseEpollItems reads the items of an epoll fdinfo, one line each
// (ep_show_fdinfo, fs/eventpoll.c):
//
//	tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x
//
// tfd, events and data are required; pos, ino and sdev (Linux 3.16+) are
// kept when present. Id is left unset.
func parseEpollItems(fi *proc.Fdinfo) ([]*eventpoll.EventpollTfdEntry, error) {
	var items []*eventpoll.EventpollTfdEntry
	for _, line := range fi.Lines {
		key, _, _ := strings.Cut(line, ":")
		if strings.TrimSpace(key) != "tfd" {
			continue
		}
		f, err := epollFields(line)
		if err != nil {
			return nil, err
		}
		it := &eventpoll.EventpollTfdEntry{}
		for _, k := range []string{"tfd", "events", "data"} {
			if _, ok := f[k]; !ok {
				return nil, malformed("epoll item %q has no %s", line, k)
			}
		}
		tfd, err := strconv.ParseUint(f["tfd"], 10, 31)
		if err != nil {
			return nil, malformed("epoll item %q: bad tfd", line)
		}
		ev, err := strconv.ParseUint(f["events"], 16, 32)
		if err != nil {
			return nil, malformed("epoll item %q: bad events", line)
		}
		data, err := strconv.ParseUint(f["data"], 16, 64)
		if err != nil {
			return nil, malformed("epoll item %q: bad data", line)
		}
		it.Tfd, it.Events, it.Data = proto.Uint32(uint32(tfd)), proto.Uint32(uint32(ev)), proto.Uint64(data)
		if v, ok := f["pos"]; ok {
			// loff_t, printed signed; keep the bits.
			p, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, malformed("epoll item %q: bad pos", line)
			}
			it.Pos = proto.Uint64(uint64(p))
		}
		if v, ok := f["ino"]; ok {
			ino, err := strconv.ParseUint(v, 16, 64)
			if err != nil {
				return nil, malformed("epoll item %q: bad ino", line)
			}
			it.Inode = proto.Uint64(ino)
		}
		if v, ok := f["sdev"]; ok {
			dev, err := strconv.ParseUint(v, 16, 32)
			if err != nil {
				return nil, malformed("epoll item %q: bad sdev", line)
			}
			it.Dev = proto.Uint32(uint32(dev))
		}
		items = append(items, it)
	}
	return items, nil
}

// epollFields splits an item line into its "key: value" and "key:value"
// pairs.
func epollFields(line string) (map[string]string, error) {
	f := map[string]string{}
	toks := strings.Fields(line)
	for i := 0; i < len(toks); i++ {
		k, v, ok := strings.Cut(toks[i], ":")
		if !ok || k == "" {
			return nil, malformed("epoll item %q: stray %q", line, toks[i])
		}
		if v == "" {
			if i+1 == len(toks) {
				return nil, malformed("epoll item %q: no value for %s", line, k)
			}
			i++
			v = toks[i]
		}
		if _, dup := f[k]; dup {
			return nil, malformed("epoll item %q: %s twice", line, k)
		}
		f[k] = v
	}
	return f, nil
}

// OpenEpoll creates an empty epoll fd with the flags of the entry. Its
// items are added later, inside the task, once every fd they name is in
// place: see RestoreEpollTargets.
func OpenEpoll(fe *fdinfo.FileEntry) (*os.File, error) {
	e := fe.GetEpfd()
	if fe.GetType() != fdinfo.FdTypes_EVENTPOLL || e == nil {
		return nil, NotKind(fe, "an epoll")
	}
	for _, t := range e.GetTfd() {
		if t.GetTfd() > math.MaxInt32 {
			return nil, fmt.Errorf("reopen epoll file id %d: item fd %d: %w", fe.GetId(), t.GetTfd(), images.ErrCorrupt)
		}
	}
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("reopen epoll file id %d: %w", fe.GetId(), os.NewSyscallError("epoll_create1", err))
	}
	f := NewAnonFile(fd, "anon_inode:[eventpoll]")
	if err := AnonSetfl(fd, e.GetFlags()); err != nil {
		f.Close()
		return nil, fmt.Errorf("reopen epoll file id %d: %w", fe.GetId(), err)
	}
	return f, nil
}

// openEpoll is OpenEpoll; an epoll no task holds (in flight) gets its
// items from stasis at once (addEpollItemsHere).
func (r *Restorer) openEpoll(fe *fdinfo.FileEntry) (*os.File, error) {
	f, err := OpenEpoll(fe)
	if err != nil || !r.epollInflight(fe.GetId()) {
		return f, err
	}
	if err := r.addEpollItemsHere(f, fe); err != nil {
		f.Close()
		return nil, fmt.Errorf("reopen epoll file id %d (in flight): %w", fe.GetId(), err)
	}
	return f, nil
}

// epollTarget is one item of an epoll fd: the task's fd number it was
// added with, and its epoll_event; File is the file id of its target
// when that number is not the target in the task (0 otherwise).
type epollTarget struct {
	Fd     int
	Events uint32
	Data   uint64
	File   uint32
}

// epollTargets lists the items of an epoll entry in image order, for
// epoll_ctl(epfd, EPOLL_CTL_ADD, Fd, &{Events, Data}) inside the task,
// after every fd of the task is at its number. Events keeps the flag bits
// (EPOLLET, EPOLLONESHOT, EPOLLEXCLUSIVE, EPOLLWAKEUP) and the
// EPOLLERR|EPOLLHUP the kernel adds. It is nil for any other entry.
func epollTargets(fe *fdinfo.FileEntry) ([]epollTarget, error) {
	e := fe.GetEpfd()
	if fe.GetType() != fdinfo.FdTypes_EVENTPOLL || e == nil {
		return nil, nil
	}
	out := make([]epollTarget, 0, len(e.GetTfd()))
	for _, t := range e.GetTfd() {
		file, err := epollTargetFile(t)
		if err != nil {
			return nil, fmt.Errorf("epoll file id %d, item fd %d: target file id: %v: %w", fe.GetId(), t.GetTfd(), err, images.ErrCorrupt)
		}
		out = append(out, epollTarget{Fd: int(t.GetTfd()), Events: t.GetEvents(), Data: t.GetData(), File: file})
	}
	return out, nil
}

// epollRestore is the restore state of the epoll fds: the file ids whose
// items are added.
type epollRestore struct{ done map[uint32]bool }

// RestoreEpollTargets adds the items of the epoll fds of task t (fds, its
// fd table), now that every fd is at its number: the kernel keys an item
// by the fd number it was added with. An epoll shared by several tasks is
// filled once, by the first of them (the numbers are that task's, as when
// it was dumped).
func (r *Restorer) RestoreEpollTargets(t remote.Task, fds []*fdinfo.FdinfoEntry) error {
	done := stateOf(r.state, "epoll", func() *epollRestore { return &epollRestore{done: map[uint32]bool{}} }).done
	for _, fe := range fds {
		file := r.Files[fe.GetId()]
		targets, err := epollTargets(file)
		if err != nil {
			return err
		}
		if len(targets) == 0 || done[fe.GetId()] || r.epollInflight(fe.GetId()) {
			continue
		}
		done[fe.GetId()] = true
		for _, tg := range targets {
			ev := make([]byte, 12) // struct epoll_event is packed on x86_64
			binary.LittleEndian.PutUint32(ev[0:], tg.Events)
			binary.LittleEndian.PutUint64(ev[4:], tg.Data)
			a, err := t.Put(0, ev)
			if err != nil {
				return err
			}
			add := func() error {
				_, err := t.Call("epoll_ctl", unix.SYS_EPOLL_CTL, uint64(fe.GetFd()), unix.EPOLL_CTL_ADD, uint64(tg.Fd), a)
				return err
			}
			if tg.File != 0 && !hasFd(fds, tg.Fd, tg.File) {
				err = r.addUnderNumber(t, fds, tg, add)
			} else {
				err = add()
			}
			if err != nil {
				return fmt.Errorf("epoll fd %d: add fd %d: %w", fe.GetFd(), tg.Fd, err)
			}
		}
	}
	return nil
}
