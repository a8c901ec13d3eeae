package files

import (
	"errors"
	"fmt"
	"io"
	"os"

	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// The buffer of a pipe or FIFO: what pipes-data.img and fifo-data.img
// keep of it (criu's pipe_data_entry and its extra blob).

type pipeData struct {
	size  int    // capacity (F_GETPIPE_SZ)
	bytes []byte // buffered, unread
}

// pipeBuffers are the buffers of the pipes (or FIFOs) of a dump, one per
// inode, copied from the first fd seen on each.
type pipeBuffers struct {
	data    map[uint64]*pipeData
	order   []uint64       // inodes in first-seen order
	holders map[uint64]*Fd // the fd each was copied from, for errors
}

func newPipeBuffers() *pipeBuffers {
	return &pipeBuffers{data: map[uint64]*pipeData{}, holders: map[uint64]*Fd{}}
}

// record copies the buffer of fd's pipe, once per pipe.
func (b *pipeBuffers) record(fd *Fd) error {
	ino := fd.Stat.Ino
	if _, ok := b.data[ino]; ok {
		return nil
	}
	d, err := readPipeData(fd)
	if err != nil {
		return err
	}
	b.data[ino] = d
	b.order = append(b.order, ino)
	b.holders[ino] = fd
	return nil
}

// readPipeData copies what is buffered in the pipe or FIFO of fd without
// consuming it: the pipe is opened again for reading through the fd's
// magic link (the task keeps its own description untouched) and tee(2)
// duplicates its buffers into a pipe of stasis, read from there.
func readPipeData(fd *Fd) (*pipeData, error) {
	src, err := unix.Open(fd.Path(), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s for reading its buffer: %w", fd.Target, err)
	}
	defer unix.Close(src)
	size, err := unix.FcntlInt(uintptr(src), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl F_GETPIPE_SZ", err)
	}
	n, err := unix.IoctlGetInt(src, unix.TIOCINQ) // FIONREAD
	if err != nil {
		return nil, os.NewSyscallError("ioctl FIONREAD", err)
	}
	d := &pipeData{size: size}
	if n == 0 {
		return d, nil
	}
	var tmp [2]int
	if err := unix.Pipe2(tmp[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	defer unix.Close(tmp[0])
	defer unix.Close(tmp[1])
	if _, err := unix.FcntlInt(uintptr(tmp[1]), unix.F_SETPIPE_SZ, size); err != nil {
		return nil, fmt.Errorf("a pipe of %d bytes to copy %s into: %w", size, fd.Target, os.NewSyscallError("fcntl F_SETPIPE_SZ", err))
	}
	got, err := unix.Tee(src, tmp[1], n, unix.SPLICE_F_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("copy the buffer of %s: %w", fd.Target, os.NewSyscallError("tee", err))
	}
	if got != int64(n) {
		return nil, fmt.Errorf("copy the buffer of %s: tee copied %d of %d bytes", fd.Target, got, n)
	}
	d.bytes = make([]byte, n)
	if _, err := io.ReadFull(fdReader(tmp[0]), d.bytes); err != nil {
		return nil, fmt.Errorf("copy the buffer of %s: %w", fd.Target, err)
	}
	return d, nil
}

type fdReader int

func (r fdReader) Read(p []byte) (int, error) {
	n, err := unix.Read(int(r), p)
	if n == 0 && err == nil {
		return 0, io.EOF
	}
	return max(n, 0), err
}

// fill gives the write end w of a new pipe the capacity and the data.
func (d *pipeData) fill(w int) error {
	if d.size > 0 {
		if _, err := unix.FcntlInt(uintptr(w), unix.F_SETPIPE_SZ, d.size); err != nil {
			return fmt.Errorf("capacity of %d bytes (more than /proc/sys/fs/pipe-max-size needs CAP_SYS_RESOURCE): %w",
				d.size, os.NewSyscallError("fcntl F_SETPIPE_SZ", err))
		}
	}
	size, err := unix.FcntlInt(uintptr(w), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return os.NewSyscallError("fcntl F_GETPIPE_SZ", err)
	}
	if len(d.bytes) > size {
		// The write would block for ever: nobody reads yet.
		return fmt.Errorf("%d buffered bytes do not fit its capacity of %d", len(d.bytes), size)
	}
	for b := d.bytes; len(b) > 0; {
		n, err := unix.Write(w, b)
		if err != nil {
			return fmt.Errorf("refill %d buffered bytes: %w", len(d.bytes), os.NewSyscallError("write", err))
		}
		b = b[n:]
	}
	return nil
}

// write writes pipes-data.img or fifo-data.img: one entry per pipe, in
// first-seen order, with its buffered bytes as extra data. Nothing is
// written for a dump without pipes.
func (b *pipeBuffers) write(dir *images.Dir, name string) error {
	if len(b.order) == 0 {
		return nil
	}
	w, err := dir.NewWriter(name)
	if err != nil {
		return err
	}
	for _, ino := range b.order {
		d := b.data[ino]
		w.Write(&pipe_data.PipeDataEntry{
			PipeId: proto.Uint32(uint32(ino)),
			Bytes:  proto.Uint32(uint32(len(d.bytes))),
			Size:   proto.Uint32(uint32(d.size)),
		})
		if len(d.bytes) > 0 {
			w.WriteExtra(d.bytes)
		}
	}
	return w.Close()
}

// readPipeDataImage reads pipes-data.img or fifo-data.img by pipe id; an
// image that is missing holds no data.
func readPipeDataImage(dir *images.Dir, name string) (map[uint32]*pipeData, error) {
	out := map[uint32]*pipeData{}
	if !dir.Has(name) {
		return out, nil
	}
	r, err := dir.NewReader(name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	for {
		off := r.Offset()
		e := &pipe_data.PipeDataEntry{}
		if err := r.Next(e); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		b, err := r.ReadExtra()
		if err != nil {
			return nil, err
		}
		if out[e.GetPipeId()] != nil {
			return nil, &images.Error{File: name, Offset: off, Err: fmt.Errorf("pipe id %d twice: %w", e.GetPipeId(), images.ErrCorrupt)}
		}
		out[e.GetPipeId()] = &pipeData{size: int(e.GetSize()), bytes: b}
	}
}

// reopenFifo opens a FIFO, or a pipe through a magic link, with the
// status flags of an entry. It opens non-blocking, which never waits for
// the other end (stasis holds one), then gives the file the entry's
// flags: os.NewFile must see a blocking fd, or it would register the
// file with the runtime's poller and keep it non-blocking.
func reopenFifo(path string, flags uint32) (*os.File, error) {
	fl := int(flags)&^(unix.O_CREAT|unix.O_TRUNC|unix.O_EXCL|unix.O_NOCTTY|unix.O_NONBLOCK) | unix.O_CLOEXEC
	fd, err := unix.Open(path, fl|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen with flags %#o: %w", flags, err)
	}
	if err := AnonSetfl(fd, flags&^unix.O_NONBLOCK); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := NewAnonFile(fd, path)
	if err := AnonSetfl(fd, flags); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
