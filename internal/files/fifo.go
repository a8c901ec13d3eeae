package files

import (
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fifo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// FIFOs (named pipes): as criu, a FIFO entry points at a regular-file
// entry with the FIFO's path and the fd's flags (regf_id), and the bytes
// buffered in it go once per FIFO to fifo-data.img. The restore opens
// the FIFO O_RDWR first and keeps that open until the end: an open for
// reading or writing alone then never blocks for the other side, and the
// refilled buffer lives while the tasks' own opens come. An unlinked FIFO
// is a ghost of its path entry (remap.go): made again with mknod, filled,
// opened under its old name and unlinked again.

func init() {
	Register(&Kind{Name: "fifo", Type: fdinfo.FdTypes_FIFO, Dump: dumpFifo, Write: writeFifos, Open: openFifo})
}

func dumpFifo(t *Table, fd *Fd) (*fdinfo.FileEntry, error) {
	if err := t.fifos().record(fd); err != nil {
		return nil, err
	}
	name, gone := t.unlinked(fd.Target, &fd.Stat)
	if gone {
		// The remap is of the path entry, which gets the next id.
		if err := t.remapUnlinked(t.nextID, fd.Path(), name, &fd.Stat); err != nil {
			return nil, err
		}
	}
	regID := t.Add(regEntry(name, fd.Flags(), 0, &fd.Stat))
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_FIFO.Enum(),
		Fifo: &fifo.FifoEntry{
			Id:     proto.Uint32(fd.ID),
			PipeId: proto.Uint32(uint32(fd.Stat.Ino)),
			RegfId: proto.Uint32(regID),
		},
	}, nil
}

func (t *Table) fifos() *pipeBuffers { return stateOf(t.state, "fifo", newPipeBuffers) }

func writeFifos(t *Table, dir *images.Dir) error {
	return t.fifos().write(dir, "fifo-data.img")
}

type fifoRestore struct {
	data    map[uint32]*pipeData // fifo-data.img
	anchors map[uint32]int       // the O_RDWR open of each FIFO, by pipe_id
}

func openFifo(r *Restorer, fe *fdinfo.FileEntry) (*os.File, error) {
	fi := fe.GetFifo()
	if fi == nil {
		return nil, NotKind(fe, "a FIFO")
	}
	reg := r.Files[fi.GetRegfId()].GetReg()
	if reg == nil {
		return nil, fmt.Errorf("FIFO file id %d: its path entry %d is not a regular-file entry of files.img: %w", fe.GetId(), fi.GetRegfId(), images.ErrCorrupt)
	}
	name := r.inRoot(reg.GetName())
	path, remapped, err := r.remapped(r.Files[fi.GetRegfId()])
	if err != nil {
		return nil, err
	}
	if !remapped {
		path = name
	}
	st := stateOf(r.state, "fifo", func() *fifoRestore { return &fifoRestore{anchors: map[uint32]int{}} })
	if st.data == nil {
		var err error
		if st.data, err = readPipeDataImage(r.Dir, "fifo-data.img"); err != nil {
			return nil, err
		}
	}
	if _, ok := st.anchors[fi.GetPipeId()]; !ok {
		anchor, err := anchorFifo(path, st.data[fi.GetPipeId()])
		if err != nil {
			return nil, err
		}
		st.anchors[fi.GetPipeId()] = anchor
		r.OnDone(func() error { return unix.Close(anchor) })
	}
	f, err := openAs(path, name, func(p string) (*os.File, error) { return reopenFifo(p, reg.GetFlags()) })
	if err != nil {
		return nil, fmt.Errorf("FIFO %s: %w", name, err)
	}
	return f, nil
}

// anchorFifo opens the FIFO at path O_RDWR and puts its dumped capacity
// and data back.
func anchorFifo(path string, d *pipeData) (int, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("FIFO %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		unix.Close(fd)
		return -1, fmt.Errorf("%s was a FIFO when dumped and is not one now", path)
	}
	if d != nil {
		if err := d.fill(fd); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("FIFO %s: %w", path, err)
		}
	}
	return fd, nil
}
