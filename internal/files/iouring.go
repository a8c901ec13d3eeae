package files

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	ext_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ext-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
)

// An io_uring instance (io_uring_setup). criu 4.2 refuses it; stasis keeps
// an idle one: its geometry, its counters and the bytes of its rings and
// SQE array. It is written as criu's "external file" (EXT, which criu
// hands to a plugin and refuses without one), its fields extensions of
// ext_file_entry that criu and crit skip:
//
//	optional uint32 uring_sq_entries = 120;
//	optional uint32 uring_cq_entries = 121;
//	optional uint32 uring_sq_head = 122; // SQEs the kernel consumed (mod 2^32)
//	optional uint32 uring_cq_tail = 123; // CQEs it posted (mod 2^32)
//	optional bytes uring_rings = 124;    // the SQ and CQ rings (IORING_OFF_SQ_RING)
//	optional bytes uring_sqes = 125;     // the SQE array (IORING_OFF_SQES)
//
// The restore makes a ring of the same geometry in stasis, brings the
// kernel's counters to the dumped ones by NOP requests, writes the
// rings' bytes back (which gives the user's counters, the SQ array,
// unreaped CQEs and SQEs not yet submitted), and the task gets the fd;
// its mappings of the ring are mapped again from it (a socket VMA to
// package mem, as a packet ring is). Refused: SQPOLL, registered files,
// buffers, personalities or NAPI, armed polls, overflowed CQEs, and
// requests in flight (consumed SQEs without their CQE), each by name.
const (
	fieldUringSQEntries = 120
	fieldUringCQEntries = 121
	fieldUringSQHead    = 122
	fieldUringCQTail    = 123
	fieldUringRings     = 124
	fieldUringSQEs      = 125
)

// uapi linux/io_uring.h.
const (
	uringParamsSize   = 120
	ioringSetupCQSize = 1 << 3
	ioringOffSQRing   = 0
	ioringOffSQEs     = 0x10000000
	ioringEnterGetEv  = 1 << 0
	ioringOpNop       = 0
	uringSQESize      = 64
	uringCQESize      = 16
	// Bounds of a ring (IORING_MAX_ENTRIES, IORING_MAX_CQ_ENTRIES).
	uringMaxEntries   = 32768
	uringMaxCQEntries = 2 * uringMaxEntries
)

func init() {
	Register(&Kind{Name: "io_uring", Dump: dumpUring})
}

type uringFile struct {
	sqEntries, cqEntries uint32
	sqHead, cqTail       uint32
	rings, sqes          []byte
}

// uringLayout is where the kernel puts the parts of a ring of a geometry,
// as a ring made in stasis shows them.
type uringLayout struct {
	sqHead, sqTail, cqHead, cqTail, sqArray, cqes uint32
	ringsLen, sqesLen                             int // bytes of the two regions
	fd                                            int // the probe ring, open
}

// newUring makes a ring of sq SQEs and cq CQEs in stasis and returns its
// layout; the caller closes l.fd.
func newUring(sq, cq uint32) (l uringLayout, err error) {
	var p [uringParamsSize]byte
	le := binary.LittleEndian
	le.PutUint32(p[4:], cq)
	le.PutUint32(p[8:], ioringSetupCQSize)
	fd, err := uringSetup(sq, &p)
	if err != nil {
		return l, err
	}
	if got, gotCQ := le.Uint32(p[0:]), le.Uint32(p[4:]); got != sq || gotCQ != cq {
		unix.Close(fd)
		return l, fmt.Errorf("io_uring_setup(%d, cq %d) made a ring of %d and %d entries: %w", sq, cq, got, gotCQ, ErrUnsupported)
	}
	so, co := p[40:80], p[80:120]
	l = uringLayout{sqHead: le.Uint32(so[0:]), sqTail: le.Uint32(so[4:]), sqArray: le.Uint32(so[24:]),
		cqHead: le.Uint32(co[0:]), cqTail: le.Uint32(co[4:]), cqes: le.Uint32(co[20:]), fd: fd}
	l.ringsLen = max(int(l.sqArray)+4*int(sq), int(l.cqes)+uringCQESize*int(cq))
	l.sqesLen = uringSQESize * int(sq)
	return l, nil
}

// uringInfo reads the fdinfo of an io_uring fd: the fields stasis keeps
// and the reasons it cannot be kept.
func uringInfo(fd *Fd) (u uringFile, why string, err error) {
	x := fd.Info.Extra
	num := func(key string) (uint32, error) {
		v, ok := x[key]
		if !ok {
			return 0, malformed("io_uring: no %s", key)
		}
		n, err := strconv.ParseUint(strings.TrimPrefix(v, "0x"), map[bool]int{true: 16, false: 10}[strings.HasPrefix(v, "0x")], 32)
		if err != nil {
			return 0, malformed("io_uring %s %q", key, v)
		}
		return uint32(n), nil
	}
	vals := map[string]uint32{}
	for _, k := range []string{"SqMask", "SqHead", "SqTail", "CachedSqHead", "CqMask", "CqHead", "CqTail", "CachedCqTail", "UserFiles", "UserBufs"} {
		if vals[k], err = num(k); err != nil {
			return u, "", err
		}
	}
	u = uringFile{sqEntries: vals["SqMask"] + 1, cqEntries: vals["CqMask"] + 1, sqHead: vals["SqHead"], cqTail: vals["CqTail"]}
	if u.sqEntries > uringMaxEntries || u.cqEntries > uringMaxCQEntries || u.sqEntries&(u.sqEntries-1) != 0 || u.cqEntries&(u.cqEntries-1) != 0 {
		return u, "", malformed("io_uring of %d SQEs and %d CQEs", u.sqEntries, u.cqEntries)
	}
	// The lists fdinfo prints after "PollList:" and "CqOverflowList:".
	var polls, overflow int
	var list *int
	for _, l := range fd.Info.Lines {
		switch k, _, _ := strings.Cut(strings.TrimSpace(l), ":"); {
		case k == "PollList":
			list = &polls
		case k == "CqOverflowList":
			list = &overflow
		case k == "Personalities" || strings.HasPrefix(k, "NAPI") || k == "SqThread":
			list = nil
		case list != nil && strings.TrimSpace(l) != "":
			*list++
		}
	}
	switch {
	case x["SqThread"] != "" && x["SqThread"] != "-1":
		why = fmt.Sprintf("it has a kernel submission thread (IORING_SETUP_SQPOLL, thread %s)", x["SqThread"])
	case vals["UserFiles"] != 0:
		why = fmt.Sprintf("it has %d registered files (IORING_REGISTER_FILES)", vals["UserFiles"])
	case vals["UserBufs"] != 0:
		why = fmt.Sprintf("it has %d registered buffers (IORING_REGISTER_BUFFERS)", vals["UserBufs"])
	case x["Personalities"] != "" || hasLine(fd.Info.Lines, "Personalities"):
		why = "it has registered personalities (IORING_REGISTER_PERSONALITY)"
	case x["NAPI"] != "" && x["NAPI"] != "disabled":
		why = fmt.Sprintf("it has NAPI busy polling (%s)", x["NAPI"])
	case polls > 0:
		why = fmt.Sprintf("it has %d poll requests armed (in flight)", polls)
	case overflow > 0:
		why = fmt.Sprintf("it has %d CQEs in the kernel's overflow list", overflow)
	case vals["CachedSqHead"] != vals["SqHead"] || vals["CachedCqTail"] != vals["CqTail"]:
		why = fmt.Sprintf("the kernel is between two states (SQ head %d, cached %d; CQ tail %d, cached %d)",
			vals["SqHead"], vals["CachedSqHead"], vals["CqTail"], vals["CachedCqTail"])
	case vals["SqHead"] != vals["CqTail"]:
		why = fmt.Sprintf("it has requests in flight (%d SQEs consumed, %d CQEs posted)", vals["SqHead"], vals["CqTail"])
	}
	return u, why, nil
}

func hasLine(lines []string, key string) bool {
	for _, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), key) {
			return true
		}
	}
	return false
}

const uringHint = "stasis keeps an idle io_uring (no request in flight, no SQPOLL, nothing registered): checkpoint it when its I/O is done, or turn io_uring off in the application (MariaDB: --innodb-use-native-aio=0)"

func dumpUring(t *Table, fd *Fd) (*fdinfo.FileEntry, error) {
	u, why, err := uringInfo(fd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fd, err)
	}
	if why == "" {
		why, err = uringMappings(fd, u)
		if err != nil {
			return nil, err
		}
	}
	if why != "" {
		return nil, &UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Kind: "io_uring", Target: why, Hint: uringHint}
	}
	if err := readUring(fd, &u); err != nil {
		return nil, err
	}
	e := &ext_file.ExtFileEntry{Id: proto.Uint32(fd.ID), Fown: &fown.FownEntry{
		Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0), PidType: proto.Uint32(0), Pid: proto.Uint32(0),
	}}
	var b []byte
	for _, v := range []struct {
		n protowire.Number
		v uint32
	}{{fieldUringSQEntries, u.sqEntries}, {fieldUringCQEntries, u.cqEntries}, {fieldUringSQHead, u.sqHead}, {fieldUringCQTail, u.cqTail}} {
		b = protowire.AppendTag(b, v.n, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(v.v))
	}
	b = protowire.AppendTag(b, fieldUringRings, protowire.BytesType)
	b = protowire.AppendBytes(b, u.rings)
	b = protowire.AppendTag(b, fieldUringSQEs, protowire.BytesType)
	b = protowire.AppendBytes(b, u.sqes)
	e.ProtoReflect().SetUnknown(b)
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_EXT.Enum(), Id: proto.Uint32(fd.ID), Ext: e}, nil
}

// uringMappings refuses a ring whose mappings in fd's process are larger
// than a ring of plain 64-byte SQEs and 16-byte CQEs: then it was made
// with IORING_SETUP_SQE128 or CQE32, which fdinfo does not show and stasis
// does not make again. (A small ring of big entries still fits in the
// same pages and cannot be told.)
func uringMappings(fd *Fd, u uringFile) (string, error) {
	l, err := newUring(u.sqEntries, u.cqEntries)
	if err != nil {
		return "", fmt.Errorf("%s: a ring of the same size: %w", fd, err)
	}
	unix.Close(l.fd)
	vmas, err := proc.ReadMaps(fd.Pid)
	if err != nil {
		return "", err
	}
	page := uint64(os.Getpagesize())
	round := func(n int) uint64 { return (uint64(n) + page - 1) &^ (page - 1) }
	for _, v := range vmas {
		if v.Inode != fd.Stat.Ino || v.Path != "anon_inode:[io_uring]" {
			continue
		}
		switch {
		case v.Offset == ioringOffSQRing && v.End-v.Start > round(l.ringsLen):
			return fmt.Sprintf("its rings, mapped at %#x, are %d bytes, larger than %d SQEs and %d CQEs of 16 bytes (IORING_SETUP_CQE32?)", v.Start, v.End-v.Start, u.sqEntries, u.cqEntries), nil
		case v.Offset == ioringOffSQEs && v.End-v.Start > round(l.sqesLen):
			return fmt.Sprintf("its SQEs, mapped at %#x, are %d bytes, more than %d SQEs of 64 bytes (IORING_SETUP_SQE128?)", v.Start, v.End-v.Start, u.sqEntries), nil
		case v.Offset != ioringOffSQRing && v.Offset != ioringOffSQEs:
			return fmt.Sprintf("it is mapped at %#x at offset %#x (a provided buffer ring?)", v.Start, v.Offset), nil
		}
	}
	return "", nil
}

// readUring reads the bytes of the rings and the SQEs through a copy of
// the fd mapped in stasis. A ring without an SQ array
// (IORING_SETUP_NO_SQARRAY) has shorter rings: they are read as far as
// they go.
func readUring(fd *Fd, u *uringFile) error {
	l, err := newUring(u.sqEntries, u.cqEntries)
	if err != nil {
		return fmt.Errorf("%s: a ring of the same size: %w", fd, err)
	}
	unix.Close(l.fd)
	c, err := fd.Dup()
	if err != nil {
		return err
	}
	defer unix.Close(c)
	read := func(off int64, lens ...int) ([]byte, error) {
		var err error
		for _, n := range lens {
			var m []byte
			if m, err = unix.Mmap(c, off, n, unix.PROT_READ, unix.MAP_SHARED); err == nil {
				b := append([]byte(nil), m...)
				return b, unix.Munmap(m)
			}
		}
		return nil, fmt.Errorf("%s: map its ring at %#x: %w", fd, off, err)
	}
	if u.rings, err = read(ioringOffSQRing, l.ringsLen, int(l.cqes)+uringCQESize*int(u.cqEntries)); err != nil {
		return err
	}
	u.sqes, err = read(ioringOffSQEs, l.sqesLen)
	return err
}

// uringOf reads the io_uring fields of an EXT entry; ok is false for an
// entry that is not stasis' io_uring.
func uringOf(fe *fdinfo.FileEntry) (u uringFile, ok bool, err error) {
	if fe.GetType() != fdinfo.FdTypes_EXT || fe.GetExt() == nil {
		return u, false, nil
	}
	b := fe.GetExt().ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return u, false, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && (num == fieldUringRings || num == fieldUringSQEs):
			v, k := protowire.ConsumeBytes(b)
			if num == fieldUringRings {
				u.rings = v
			} else {
				u.sqes = v
			}
			n, ok = k, true
		case typ == protowire.VarintType && num >= fieldUringSQEntries && num <= fieldUringCQTail:
			v, k := protowire.ConsumeVarint(b)
			n, ok = k, true
			*map[protowire.Number]*uint32{fieldUringSQEntries: &u.sqEntries, fieldUringCQEntries: &u.cqEntries,
				fieldUringSQHead: &u.sqHead, fieldUringCQTail: &u.cqTail}[num] = uint32(v)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return u, false, protowire.ParseError(n)
		}
		b = b[n:]
	}
	if ok && (u.sqEntries == 0 || u.sqEntries > uringMaxEntries || u.sqEntries&(u.sqEntries-1) != 0 ||
		u.cqEntries < u.sqEntries || u.cqEntries > uringMaxCQEntries || u.cqEntries&(u.cqEntries-1) != 0 ||
		u.sqHead != u.cqTail || len(u.sqes) != uringSQESize*int(u.sqEntries)) {
		return u, false, fmt.Errorf("io_uring of %d SQEs and %d CQEs (SQ head %d, CQ tail %d, %d bytes of SQEs): %w",
			u.sqEntries, u.cqEntries, u.sqHead, u.cqTail, len(u.sqes), images.ErrCorrupt)
	}
	return u, ok, nil
}

// openUring makes the ring of an entry again in stasis: same geometry,
// the kernel's counters brought to the dumped ones by NOPs, the rings'
// and SQEs' bytes written back.
func openUring(id uint32, u uringFile) (*os.File, error) {
	l, err := newUring(u.sqEntries, u.cqEntries)
	if err != nil {
		return nil, fmt.Errorf("io_uring %d: %w", id, err)
	}
	f := NewAnonFile(l.fd, "anon_inode:[io_uring]")
	if len(u.rings) > l.ringsLen || len(u.rings) < int(l.cqes)+uringCQESize*int(u.cqEntries) {
		f.Close()
		return nil, fmt.Errorf("io_uring %d: rings of %d bytes, want %d: %w", id, len(u.rings), l.ringsLen, images.ErrCorrupt)
	}
	if err := fillUring(l, u); err != nil {
		f.Close()
		return nil, fmt.Errorf("io_uring %d: %w", id, err)
	}
	return f, nil
}

func fillUring(l uringLayout, u uringFile) error {
	rings, err := unix.Mmap(l.fd, ioringOffSQRing, l.ringsLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return os.NewSyscallError("mmap rings", err)
	}
	defer unix.Munmap(rings)
	sqes, err := unix.Mmap(l.fd, ioringOffSQEs, l.sqesLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return os.NewSyscallError("mmap sqes", err)
	}
	defer unix.Munmap(sqes)
	le := binary.LittleEndian
	u32 := func(off uint32) uint32 { return le.Uint32(rings[off:]) }
	for i := uint32(0); i < u.sqEntries; i++ {
		le.PutUint32(rings[l.sqArray+4*i:], i)
	}
	// Every NOP is one SQE consumed and one CQE posted: n of them bring
	// both kernel counters from 0 to n (mod 2^32), a ring-full at a time.
	batch := min(u.sqEntries, u.cqEntries)
	for left := u.sqHead; left > 0; {
		n := min(left, batch)
		tail := u32(l.sqTail)
		for i := uint32(0); i < n; i++ {
			sqe := sqes[uringSQESize*((tail+i)&(u.sqEntries-1)):][:uringSQESize]
			clear(sqe)
			sqe[0] = ioringOpNop
		}
		le.PutUint32(rings[l.sqTail:], tail+n)
		r, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(l.fd), uintptr(n), uintptr(n), ioringEnterGetEv, 0, 0)
		if errno != 0 {
			return os.NewSyscallError("io_uring_enter", errno)
		}
		if uint32(r) != n || u32(l.cqTail)-u32(l.cqHead) != n {
			return fmt.Errorf("%d NOPs: %d submitted, %d completed", n, r, u32(l.cqTail)-u32(l.cqHead))
		}
		le.PutUint32(rings[l.cqHead:], u32(l.cqTail))
		left -= n
	}
	if u32(l.sqHead) != u.sqHead || u32(l.cqTail) != u.cqTail {
		return fmt.Errorf("counters at SQ head %d, CQ tail %d after the NOPs, want %d and %d", u32(l.sqHead), u32(l.cqTail), u.sqHead, u.cqTail)
	}
	copy(rings, u.rings)
	if len(u.rings) < l.ringsLen || allZero(rings[l.sqArray:l.sqArray+4*u.sqEntries]) {
		// The ring had no SQ array (IORING_SETUP_NO_SQARRAY): the
		// kernel took SQE i from slot i, which the array says now.
		for i := uint32(0); i < u.sqEntries; i++ {
			le.PutUint32(rings[l.sqArray+4*i:], i)
		}
	}
	copy(sqes, u.sqes)
	if u32(l.sqHead) != u.sqHead || u32(l.cqTail) != u.cqTail {
		return fmt.Errorf("the dumped rings say SQ head %d, CQ tail %d, fdinfo %d and %d: %w", u32(l.sqHead), u32(l.cqTail), u.sqHead, u.cqTail, images.ErrCorrupt)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
