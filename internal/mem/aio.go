package mem

import (
	"encoding/binary"
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/remote"
)

// Linux AIO rings (io_setup): the completion ring of an AIO context is
// mapped in the process ("/[aio]"), its header and its completed events
// readable by the process. As criu does, the ring's pages are dumped like
// private memory, with criu's aio_ring_entry (the ring's address, which is
// also the context's id, its length and a request count that gives a
// ring of that length). The restore maps the old content at the address
// for a moment, makes a new context, brings the kernel's tail of it where
// the old one was by completing that many writes to /dev/null, copies the
// old ring (header and events) into the new one and moves the new ring to
// the old address, which makes it the context's id (aio_ring_mremap).
// Requests still in flight at the dump are not seen: their completions
// do not come.

// struct aio_ring (fs/aio.c), struct io_event, struct iocb.
const (
	aioRingHeader = 32
	aioRingMagic  = 0xa10a10a1
	ioEventSize   = 32
	iocbSize      = 64
	iocbCmdPwrite = 1
)

// AioRing returns the aio_ring_entry of the ring mapped by a in pid.
func AioRing(pid int, a *Area) (*mm.AioRingEntry, error) {
	h := make([]byte, aioRingHeader)
	if err := ptrace.ReadMem(pid, a.Start(), h); err != nil {
		return nil, fmt.Errorf("AIO ring at %#x of pid %d: %w", a.Start(), pid, err)
	}
	le := binary.LittleEndian
	if le.Uint32(h[16:]) != aioRingMagic {
		return nil, fmt.Errorf("AIO ring at %#x of pid %d: magic %#x: %w", a.Start(), pid, le.Uint32(h[16:]), ErrUnsupportedVMA)
	}
	length := a.End() - a.Start()
	return &mm.AioRingEntry{
		Id: proto.Uint64(a.Start()),
		// io_setup doubles what it is asked for, adds 2 and rounds the
		// ring up to pages: this many gives a ring of this length.
		NrReq:   proto.Uint32(uint32(((length-aioRingHeader)/ioEventSize - 2) / 2)),
		RingLen: proto.Uint32(uint32(length)),
	}, nil
}

// restoreAioRings makes the AIO contexts of m again in the task t, each
// in place of the mapping that holds its dumped ring by now.
func restoreAioRings(t remote.Task, m *mm.MmEntry) error {
	rings := map[uint64]*mm.AioRingEntry{}
	for _, r := range m.GetAios() {
		rings[r.GetId()] = r
	}
	for _, e := range m.GetVmas() {
		if e.GetStatus()&AreaAIORing == 0 {
			continue
		}
		ring := rings[e.GetStart()]
		if ring == nil {
			return fmt.Errorf("AIO ring at %#x has no aio entry in the mm image: %w", e.GetStart(), images.ErrCorrupt)
		}
		if err := RestoreAioRing(t, e, ring); err != nil {
			return err
		}
	}
	return nil
}

// RestoreAioRing makes the AIO context of ring again in the task t, whose
// VMA e holds the dumped ring's content by now (an anonymous mapping).
func RestoreAioRing(t remote.Task, e *vma.VmaEntry, ring *mm.AioRingEntry) error {
	start, length := e.GetStart(), e.GetEnd()-e.GetStart()
	fail := func(format string, args ...any) error {
		return fmt.Errorf("AIO ring at %#x of pid %d: %s", start, t.HostPid(), fmt.Sprintf(format, args...))
	}
	if uint64(ring.GetRingLen()) != length {
		return fail("%d bytes in the mm image, the vma has %d", ring.GetRingLen(), length)
	}
	old := make([]byte, length)
	if err := ptrace.ReadMem(t.HostPid(), start, old); err != nil {
		return fail("%v", err)
	}
	le := binary.LittleEndian
	nr, head, tail := le.Uint32(old[4:]), le.Uint32(old[8:]), le.Uint32(old[12:])
	if le.Uint32(old[16:]) != aioRingMagic || head >= nr || tail >= nr {
		return fail("bad header: nr %d head %d tail %d magic %#x", nr, head, tail, le.Uint32(old[16:]))
	}
	a, err := t.Put(0, make([]byte, 8))
	if err != nil {
		return err
	}
	if _, err := t.Call("io_setup", unix.SYS_IO_SETUP, uint64(ring.GetNrReq()), a); err != nil {
		return fail("io_setup(%d): %v", ring.GetNrReq(), err)
	}
	b, err := t.Get(0, 8)
	if err != nil {
		return err
	}
	ctx := le.Uint64(b)
	h := make([]byte, aioRingHeader)
	if err := ptrace.ReadMem(t.HostPid(), ctx, h); err != nil {
		return fail("new ring: %v", err)
	}
	if n := le.Uint32(h[4:]); n != nr {
		return fail("the new ring holds %d events, the dumped one %d (this host has more CPUs?)", n, nr)
	}
	if err := advanceAioTail(t, ctx, tail, ring.GetNrReq()); err != nil {
		return fail("%v", err)
	}
	if err := ptrace.WriteMem(t.HostPid(), ctx, old); err != nil {
		return fail("copy into the new ring: %v", err)
	}
	if _, err := t.Call("munmap", unix.SYS_MUNMAP, start, length); err != nil {
		return err
	}
	r, err := t.Call("mremap", unix.SYS_MREMAP, ctx, length, length, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, start)
	if err != nil || r != start {
		return fail("move the new ring from %#x: %#x, %v", ctx, r, err)
	}
	return nil
}

// advanceAioTail completes n writes of one byte to /dev/null on context
// ctx and reaps them, in batches the ring has room for, so that the
// kernel's tail of the ring is n.
func advanceAioTail(t remote.Task, ctx uint64, n, nrReq uint32) error {
	if n == 0 {
		return nil
	}
	path, err := t.Put(0, []byte("/dev/null\x00"))
	if err != nil {
		return err
	}
	const atFdcwd = ^uint64(99) // AT_FDCWD, -100
	fd, err := t.Call("openat(/dev/null)", unix.SYS_OPENAT, atFdcwd, path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer t.Call("close", unix.SYS_CLOSE, fd)
	batch := min(nrReq, 64)
	const iocbOff, ptrOff, evOff, bufOff = 4096, 4096 + 64*iocbSize, 16384, 64
	// The scratch's address: Put of nothing writes nothing.
	base, err := t.Put(0, nil)
	if err != nil {
		return err
	}
	buf := base + bufOff
	iocbs := make([]byte, int(batch)*iocbSize)
	ptrs := make([]byte, int(batch)*8)
	le := binary.LittleEndian
	for i := range int(batch) {
		cb := iocbs[i*iocbSize:]
		le.PutUint16(cb[16:], iocbCmdPwrite)
		le.PutUint32(cb[20:], uint32(fd))
		le.PutUint64(cb[24:], buf)
		le.PutUint64(cb[32:], 1)
		le.PutUint64(ptrs[i*8:], base+iocbOff+uint64(i*iocbSize))
	}
	if _, err := t.Put(iocbOff, iocbs); err != nil {
		return err
	}
	if _, err := t.Put(ptrOff, ptrs); err != nil {
		return err
	}
	for done := uint32(0); done < n; {
		k := uint64(min(batch, n-done))
		got, err := t.Call("io_submit", unix.SYS_IO_SUBMIT, ctx, k, base+ptrOff)
		if err != nil || got != k {
			return fmt.Errorf("io_submit of %d writes to /dev/null: %d, %v", k, got, err)
		}
		got, err = t.Call("io_getevents", unix.SYS_IO_GETEVENTS, ctx, k, k, base+evOff, 0)
		if err != nil || got != k {
			return fmt.Errorf("io_getevents of %d: %d, %v", k, got, err)
		}
		done += uint32(k)
	}
	return nil
}
