package files

import (
	"fmt"
	"os"
	"slices"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pipe"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// Unnamed pipes. Each open end is a PipeEntry keyed by the pipe's inode
// (pipe_id); the bytes buffered in the pipe and its capacity go once per
// pipe to pipes-data.img. The restore makes one pipe per pipe_id, fills
// it and hands its ends to the entries; an end opened twice (two open
// file descriptions, e.g. reopened through /proc) is opened again through
// /proc/self/fd, as the task did.

func init() {
	Register(&Kind{Name: "pipe", Type: fdinfo.FdTypes_PIPE, Dump: dumpPipe, Check: checkPipes, Write: writePipes, Open: openPipe})
}

func (t *Table) pipes() *pipeBuffers {
	return stateOf(t.state, "pipe", newPipeBuffers)
}

func dumpPipe(t *Table, fd *Fd) (*fdinfo.FileEntry, error) {
	if err := t.pipes().record(fd); err != nil {
		return nil, err
	}
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_PIPE.Enum(),
		Pipe: &pipe.PipeEntry{
			Id:     proto.Uint32(fd.ID),
			PipeId: proto.Uint32(uint32(fd.Stat.Ino)),
			Flags:  proto.Uint32(fd.Flags()),
			Fown:   AnonFown(),
		},
	}, nil
}

func writePipes(t *Table, dir *images.Dir) error {
	return t.pipes().write(dir, "pipes-data.img")
}

// checkPipes looks for the tree's pipes in the fd tables of every other
// process. A pipe shared with a process outside the tree cannot be
// restored as it was: the restored tree would get a new pipe, no longer
// connected to the outside process, and each side would see the other
// vanish. The user must say what to do with it (--external and, at
// restore, --inherit-fd), as for criu's external resources.
func checkPipes(t *Table) error {
	p := t.pipes()
	want := map[string]bool{}
	for _, ino := range p.order {
		if key := pipeKey(ino); !slices.Contains(t.Opts.External, key) {
			want[key] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	// The first outside holder of each pipe, all in one pass over /proc.
	outside := map[string]Holder{}
	FindHolder(func(pid int) bool { return t.pids[pid] || NotSelf(pid) }, func(pid int, fd, target string) bool {
		if _, seen := outside[target]; want[target] && !seen {
			outside[target] = Holder{pid: pid, fd: fd}
		}
		return false
	})
	for _, ino := range p.order {
		key := pipeKey(ino)
		h, ok := outside[key]
		if !ok {
			continue
		}
		in := p.holders[ino]
		if err := t.Refuse(fmt.Errorf("%s (fd %d of pid %d) is also open as %s, outside the dumped tree: "+
			"dump the tree that holds both, or dump with --external %s and restore with --inherit-fd fd[N]:%s",
			key, in.Num, in.Pid, h, key, key)); err != nil {
			return err
		}
	}
	return nil
}

func pipeKey(ino uint64) string { return fmt.Sprintf("pipe:[%d]", ino) }

// pipeRestore is the restore state of the pipes: one per pipe_id.
type pipeRestore struct {
	data  map[uint32]*pipeData // pipes-data.img, read once
	pipes map[uint32]*pipeEnds
}

// pipeEnds is one restored pipe: a file of each end, and whether that end
// has been handed to an entry (its open file description is taken; a
// second entry of the same end is a second description).
type pipeEnds struct {
	end   [2]*os.File // by access mode: O_RDONLY, O_WRONLY
	given [2]bool
}

func openPipe(r *Restorer, fe *fdinfo.FileEntry) (*os.File, error) {
	pe := fe.GetPipe()
	if pe == nil {
		return nil, NotKind(fe, "a pipe")
	}
	st := stateOf(r.state, "pipe", func() *pipeRestore { return &pipeRestore{pipes: map[uint32]*pipeEnds{}} })
	if st.data == nil {
		var err error
		if st.data, err = readPipeDataImage(r.Dir, "pipes-data.img"); err != nil {
			return nil, err
		}
	}
	p := st.pipes[pe.GetPipeId()]
	if p == nil {
		var err error
		if p, err = newPipe(r, pe.GetPipeId(), st.data[pe.GetPipeId()]); err != nil {
			return nil, err
		}
		st.pipes[pe.GetPipeId()] = p
		r.OnDone(p.close)
	}
	f, err := p.open(pe.GetFlags())
	if err != nil {
		return nil, fmt.Errorf("pipe:[%d] (file id %d): %w", pe.GetPipeId(), fe.GetId(), err)
	}
	return f, nil
}

// newPipe makes the pipe of pipe_id id: the file stasis inherited for it
// (--inherit-fd fd[N]:pipe:[id]), which is connected to the outside, or a
// new pipe with the dumped capacity and data.
func newPipe(r *Restorer, id uint32, d *pipeData) (*pipeEnds, error) {
	p := &pipeEnds{}
	if in, ok := r.Inherited(pipeKey(uint64(id))); ok {
		fl, err := unix.FcntlInt(in.Fd(), unix.F_GETFL, 0)
		if err != nil {
			in.Close()
			return nil, err
		}
		if fl&unix.O_ACCMODE == unix.O_RDWR {
			fl = unix.O_RDONLY
		}
		p.end[fl&unix.O_ACCMODE] = in
		return p, nil
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("pipe:[%d]: %w", id, os.NewSyscallError("pipe2", err))
	}
	p.end[0] = os.NewFile(uintptr(fds[0]), fmt.Sprintf("pipe:[%d] read end", id))
	p.end[1] = os.NewFile(uintptr(fds[1]), fmt.Sprintf("pipe:[%d] write end", id))
	if d != nil {
		if err := d.fill(int(p.end[1].Fd())); err != nil {
			p.close()
			return nil, fmt.Errorf("pipe:[%d]: %w", id, err)
		}
	}
	return p, nil
}

// open returns an open file description of the pipe with the status
// flags of an entry: the pipe's own end the first time, then new ones.
func (p *pipeEnds) open(flags uint32) (*os.File, error) {
	mode := int(flags & unix.O_ACCMODE)
	if mode != unix.O_RDWR && p.end[mode] != nil && !p.given[mode] {
		p.given[mode] = true
		f := p.end[mode]
		if err := AnonSetfl(int(f.Fd()), flags); err != nil {
			return nil, err
		}
		return f, nil
	}
	// Another description of the same pipe: opening a pipe's magic link
	// opens the pipe again, like a FIFO, with the requested mode.
	any := p.end[0]
	if any == nil {
		any = p.end[1]
	}
	return reopenFifo(fmt.Sprintf("/proc/self/fd/%d", any.Fd()), flags)
}

// close closes the ends no entry took (the others are closed with the
// Restorer's open files).
func (p *pipeEnds) close() error {
	for i, f := range p.end {
		if f != nil && !p.given[i] {
			f.Close()
		}
	}
	return nil
}
