package tty

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
)

// Terminals, as criu's tty.c keeps them: every fd of a terminal is a
// FileEntry of type TTY (files.img) naming a TtyInfoEntry (tty-info.img),
// one per terminal side, with its termios, window size, lock, packet mode,
// session and foreground group; bytes pending in a pty pair go to
// tty-data.img. Info ids are criu's: index<<1 for a pty slave, index<<1|1
// for its master, fixed indices for /dev/tty and external terminals.
//
// A pty pair whose master and slave are both in the tree (screen, tmux,
// sshd) is made again with the same index; a slave whose master is outside
// (the terminal a shell job was started from) is the terminal of
// `stasis restore -j`, or an --inherit-fd tty[RDEV:DEV]. The session that
// had a pty as its controlling terminal gets it back (see ctty.go).

func init() {
	files.Register(&files.Kind{Name: "tty", Type: fdinfo.FdTypes_TTY, Dump: dumpTty, Check: checkTtys, Write: writeTtys, Open: openTty, Device: isTty})
}

// Device numbers (linux/major.h) and criu's fixed info indices (tty.c).
const (
	ttyMajor      = 4   // virtual consoles and serial ports
	ttyAuxMajor   = 5   // 5:0 /dev/tty, 5:1 /dev/console, 5:2 /dev/ptmx
	ptsMajor      = 136 // UNIX98_PTY_SLAVE_MAJOR, 8 majors of 256 minors
	ptsMajorCount = 8
	ctlTtyIndex   = 1006 // criu's CTTY_INDEX
	extTtyIndex   = 1008 // first index of --external terminals
	maxPtyIndex   = 1000 // criu's MAX_PTY_INDEX: its restore refuses more
	ptyBufSize    = 1 << 16
)

// isTty tells whether a character device is a terminal, which files'
// kindOf then names "tty" (Kind.Device).
func isTty(rdev uint64) bool {
	maj := unix.Major(rdev)
	return maj == ttyMajor || maj == ttyAuxMajor || (maj >= ptsMajor && maj < ptsMajor+ptsMajorCount)
}

// ExternalTtyKey is criu's key of a terminal outside the tree, for
// --external and --inherit-fd: tty[RDEV:DEV] in hex.
func ExternalTtyKey(rdev, dev uint64) string { return fmt.Sprintf("tty[%x:%x]", rdev, dev) }

// ptsRdev is the device number of the slave of pty index.
func ptsRdev(index int) uint64 { return unix.Mkdev(uint32(ptsMajor+index/256), uint32(index%256)) }

// ttyDump is the dump state of the terminals.
type ttyDump struct {
	infos   map[uint32]*tty.TtyInfoEntry
	order   []uint32
	holders map[uint32]*files.Fd // the first fd of each info, for errors
	lfds    map[uint32]int       // stasis' copy of a master and a slave of each pty, for the data
	ext     map[string]uint32
	// writeBack put back what was read out of each pty (see takeData),
	// before lfds are closed.
	writeBack []func(killed bool) error
}

func dumpState(t *files.Table) *ttyDump {
	return files.DumpState(t, "tty", func() *ttyDump {
		d := &ttyDump{infos: map[uint32]*tty.TtyInfoEntry{}, holders: map[uint32]*files.Fd{}, lfds: map[uint32]int{}, ext: map[string]uint32{}}
		// Registered with the first terminal: its copies are closed
		// however the dump ends, even before writeTtys.
		t.AtFinish(func(killed bool) error {
			var errs []error
			for _, fn := range d.writeBack {
				errs = append(errs, fn(killed))
			}
			for _, lfd := range d.lfds {
				unix.Close(lfd)
			}
			return errors.Join(errs...)
		})
		return d
	})
}

func dumpTty(t *files.Table, fd *files.Fd) (*fdinfo.FileEntry, error) {
	d := dumpState(t)
	rdev := fd.Stat.Rdev
	maj, min := unix.Major(rdev), unix.Minor(rdev)
	key := ExternalTtyKey(rdev, fd.Stat.Dev)
	var (
		typ   tty.TtyType
		id    uint32
		index = -1
	)
	switch {
	case slices.Contains(t.Opts.External, key):
		typ = tty.TtyType_EXT_TTY
		if id = d.ext[key]; id == 0 {
			id = uint32(extTtyIndex+2*len(d.ext)) << 1
			d.ext[key] = id
		}
	case maj == ttyAuxMajor && min == 2:
		typ = tty.TtyType_PTY
		lfd, err := fd.Dup()
		if err != nil {
			return nil, err
		}
		n, err := unix.IoctlGetInt(lfd, unix.TIOCGPTN)
		unix.Close(lfd)
		if err != nil {
			return nil, fmt.Errorf("pty index: %w", os.NewSyscallError("ioctl TIOCGPTN", err))
		}
		index, id = n, uint32(n)<<1|1
	case maj >= ptsMajor && maj < ptsMajor+ptsMajorCount:
		typ = tty.TtyType_PTY
		index = int(maj-ptsMajor)*256 + int(min)
		id = uint32(index) << 1
	case maj == ttyAuxMajor && min == 0:
		typ, id = tty.TtyType_CTTY, ctlTtyIndex<<1
	default:
		what := "a virtual console or serial port"
		if maj == ttyAuxMajor && min == 1 {
			what = "the system console"
		}
		return nil, &files.UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Kind: "tty", Target: fd.Target,
			Hint: fmt.Sprintf("%s cannot be made again by a restore; dump with --external %s and restore with --inherit-fd fd[N]:%s", what, key, key)}
	}
	if index > maxPtyIndex {
		return nil, fmt.Errorf("pty index %d is above %d, which criu's images cannot hold", index, maxPtyIndex)
	}
	if _, ok := d.infos[id]; !ok {
		info, err := dumpTtyInfo(d, fd, typ, id, index)
		if err != nil {
			return nil, err
		}
		d.infos[id] = info
		d.order = append(d.order, id)
		d.holders[id] = fd
	}
	// criu 4.2 refuses a tty without the regular file entry of its path
	// ("TTY w/o regfile"); stasis opens ttys by index and ignores it.
	regf := t.AddReg(fd.Target, fd.Flags(), &fd.Stat)
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_TTY.Enum(),
		Tty: &tty.TtyFileEntry{
			Id:        proto.Uint32(fd.ID),
			TtyInfoId: proto.Uint32(id),
			Flags:     proto.Uint32(fd.Flags()),
			Fown:      files.AnonFown(),
			RegfId:    proto.Uint32(regf),
		},
	}, nil
}

// dumpTtyInfo reads the state of one terminal side through a copy of fd.
// The session and foreground group are filled in writeTtys, once every
// task of the tree is known.
func dumpTtyInfo(d *ttyDump, fd *files.Fd, typ tty.TtyType, id uint32, index int) (*tty.TtyInfoEntry, error) {
	info := &tty.TtyInfoEntry{
		Id: proto.Uint32(id), Type: typ.Enum(),
		Locked: proto.Bool(false), Exclusive: proto.Bool(false), PacketMode: proto.Bool(false),
		Sid: proto.Uint32(0), Pgrp: proto.Uint32(0),
		Rdev: proto.Uint32(uint32(fd.Stat.Rdev)), Dev: proto.Uint32(uint32(fd.Stat.Dev)),
		Uid: proto.Uint32(fd.Stat.Uid), Gid: proto.Uint32(fd.Stat.Gid),
	}
	if typ != tty.TtyType_PTY {
		return info, nil
	}
	info.Pty = &tty.TtyPtyEntry{Index: proto.Uint32(uint32(index))}
	lfd, err := fd.Dup()
	if err != nil {
		return nil, err
	}
	keep := false
	defer func() {
		if !keep {
			unix.Close(lfd)
		}
	}()
	tio, err := unix.IoctlGetTermios(lfd, unix.TCGETS)
	if errors.Is(err, unix.EIO) && id&1 == 0 {
		// A slave whose master was closed is hung up (hangup.go): it
		// has no state left, its entry no termios, as criu's.
		return info, nil
	}
	if err != nil {
		return nil, os.NewSyscallError("ioctl TCGETS", err)
	}
	locked, err := unix.IoctlGetTermios(lfd, unix.TIOCGLCKTRMIOS)
	if err != nil {
		return nil, os.NewSyscallError("ioctl TIOCGLCKTRMIOS", err)
	}
	ws, err := unix.IoctlGetWinsize(lfd, unix.TIOCGWINSZ)
	if err != nil {
		return nil, os.NewSyscallError("ioctl TIOCGWINSZ", err)
	}
	info.Termios, info.TermiosLocked = termiosEntry(tio), termiosEntry(locked)
	info.Winsize = &tty.WinsizeEntry{WsRow: proto.Uint32(uint32(ws.Row)), WsCol: proto.Uint32(uint32(ws.Col)),
		WsXpixel: proto.Uint32(uint32(ws.Xpixel)), WsYpixel: proto.Uint32(uint32(ws.Ypixel))}
	excl, err := unix.IoctlGetInt(lfd, unix.TIOCGEXCL)
	if err != nil {
		return nil, os.NewSyscallError("ioctl TIOCGEXCL", err)
	}
	info.Exclusive = proto.Bool(excl != 0)
	if id&1 == 1 { // lock and packet mode are the master's
		lock, err := unix.IoctlGetInt(lfd, unix.TIOCGPTLCK)
		if err != nil {
			return nil, os.NewSyscallError("ioctl TIOCGPTLCK", err)
		}
		pkt, err := unix.IoctlGetInt(lfd, unix.TIOCGPKT)
		if err != nil {
			return nil, os.NewSyscallError("ioctl TIOCGPKT", err)
		}
		info.Locked, info.PacketMode = proto.Bool(lock != 0), proto.Bool(pkt != 0)
	}
	d.lfds[id] = lfd
	keep = true
	return info, nil
}

// The control characters of a termios entry. criu copies the kernel's
// c_cc bytes into the uint32 words of c_cc with memcpy of 8 bytes (the
// size of the pointer it copies to): its images carry c_cc[0..7] packed
// four to a word in words 0 and 1, the rest of the 19 words is whatever
// was in memory, and its restore takes those 8 bytes back. stasis packs
// all 19 bytes the same way into words 0 to 4 (criu reads its 8 from
// them), zeroes the rest and marks its word 18, so that it knows its
// own images have all of them. Images of stasis before this format had
// one byte per word.
const (
	termiosNCC      = 19 // NCCS of the kernel's struct termios
	termiosCriuNCC  = 8  // the bytes of c_cc criu keeps
	termiosCCMarker = 0x53544153
)

func termiosEntry(t *unix.Termios) *tty.TermiosEntry {
	cc := make([]uint32, termiosNCC)
	for i, c := range t.Cc {
		cc[i/4] |= uint32(c) << (8 * (i % 4))
	}
	cc[termiosNCC-1] = termiosCCMarker
	return &tty.TermiosEntry{CIflag: proto.Uint32(t.Iflag), COflag: proto.Uint32(t.Oflag), CCflag: proto.Uint32(t.Cflag),
		CLflag: proto.Uint32(t.Lflag), CLine: proto.Uint32(uint32(t.Line)), CIspeed: proto.Uint32(t.Ispeed),
		COspeed: proto.Uint32(t.Ospeed), CCc: cc}
}

// termiosOf decodes a termios entry. known is how many leading control
// characters the image really has (8 in criu's images): the rest should
// stay as the terminal has them (termiosOnto).
func termiosOf(e *tty.TermiosEntry) (t *unix.Termios, known int, err error) {
	t = &unix.Termios{Iflag: e.GetCIflag(), Oflag: e.GetCOflag(), Cflag: e.GetCCflag(), Lflag: e.GetCLflag(),
		Line: uint8(e.GetCLine()), Ispeed: e.GetCIspeed(), Ospeed: e.GetCOspeed()}
	cc := e.GetCCc()
	if len(cc) < termiosNCC {
		return nil, 0, fmt.Errorf("termios with %d control characters, want %d: %w", len(cc), termiosNCC, images.ErrCorrupt)
	}
	if !slices.ContainsFunc(cc, func(w uint32) bool { return w > 0xff }) {
		for i := range t.Cc {
			t.Cc[i] = uint8(cc[i]) // one byte per word: stasis before criu's format
		}
		return t, len(t.Cc), nil
	}
	for i := range t.Cc {
		t.Cc[i] = uint8(cc[i/4] >> (8 * (i % 4)))
	}
	if cc[termiosNCC-1] == termiosCCMarker && !slices.ContainsFunc(cc[5:termiosNCC-1], func(w uint32) bool { return w != 0 }) {
		return t, len(t.Cc), nil
	}
	return t, termiosCriuNCC, nil
}

// termiosOnto decodes a termios entry for the terminal fd: control
// characters the image lacks are the terminal's own.
func termiosOnto(fd int, e *tty.TermiosEntry) (*unix.Termios, error) {
	t, known, err := termiosOf(e)
	if err != nil || known == len(t.Cc) {
		return t, err
	}
	cur, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, os.NewSyscallError("ioctl TCGETS", err)
	}
	copy(t.Cc[known:], cur.Cc[known:])
	return t, nil
}

// checkTtys refuses a pty slave whose master is outside the tree, but
// with -j.
func checkTtys(t *files.Table) error {
	if t.Opts.ShellJob || t.Opts.OrphanPtsMaster {
		return nil
	}
	d := dumpState(t)
	for _, id := range d.order {
		info := d.infos[id]
		if info.GetType() != tty.TtyType_PTY || id&1 == 1 {
			continue
		}
		if _, paired := d.infos[id|1]; !paired && !hungUp(info) {
			fd := d.holders[id]
			if err := t.Refuse(&files.UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Kind: "a terminal whose master is outside the tree", Target: fd.Target,
				Hint: fmt.Sprintf("the tree was started from a shell: dump with -j/--shell-job and restore with -j (it then gets the terminal of stasis restore), or dump with --external %[1]s and restore with --inherit-fd fd[N]:%[1]s (the terminal given back)",
					ExternalTtyKey(uint64(info.GetRdev()), uint64(info.GetDev())))}); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeTtys fills in sessions and foreground groups, takes the bytes
// pending in each pty pair and writes tty-info.img and tty-data.img.
func writeTtys(t *files.Table, dir *images.Dir) error {
	d := dumpState(t)
	if len(d.order) == 0 {
		return nil
	}
	if err := d.sessions(t); err != nil {
		return err
	}
	var data []proto.Message
	for _, id := range d.order {
		info := d.infos[id]
		if info.GetType() != tty.TtyType_PTY || id&1 == 1 {
			continue
		}
		if _, paired := d.infos[id|1]; !paired {
			continue // with -j (checkTtys)
		}
		ms, err := d.takeData(id)
		if err != nil {
			return err
		}
		data = append(data, ms...)
	}
	ms := make([]proto.Message, 0, len(d.order))
	for _, id := range d.order {
		ms = append(ms, d.infos[id])
	}
	if err := dir.Write("tty-info.img", ms...); err != nil {
		return err
	}
	if len(data) == 0 {
		return nil
	}
	return dir.Write("tty-data.img", data...)
}

// sessions sets the session and foreground group of each terminal: those
// of the tasks whose controlling terminal it is (/proc/PID/stat; the
// ioctls would answer only to a member of the session).
func (d *ttyDump) sessions(t *files.Table) error {
	byDev := map[uint64][2]int{}
	for _, pid := range t.Pids() {
		st, err := proc.ReadStat(pid)
		if err != nil {
			return fmt.Errorf("controlling terminal of pid %d: %w", pid, err)
		}
		if st.TtyNr == 0 {
			continue
		}
		if _, ok := byDev[uint64(st.TtyNr)]; !ok {
			byDev[uint64(st.TtyNr)] = [2]int{st.Session, max(st.Tpgid, 0)}
		}
	}
	for _, id := range d.order {
		info := d.infos[id]
		dev := uint64(info.GetRdev())
		switch info.GetType() {
		case tty.TtyType_PTY:
			dev = ptsRdev(int(info.GetPty().GetIndex()))
		case tty.TtyType_CTTY:
			// /dev/tty stands for the session's terminal: the holder's.
			st, err := proc.ReadStat(d.holders[id].Pid)
			if err != nil {
				return err
			}
			dev = uint64(st.TtyNr)
		}
		if s, ok := byDev[dev]; ok {
			info.Sid, info.Pgrp = proto.Uint32(uint32(s[0])), proto.Uint32(uint32(s[1]))
		}
	}
	return nil
}

// takeData reads what is pending in both directions of the pty pair of
// slave info id: typed on the master for the slave to read, written on
// the slave for the master to read. Reading consumes it, so it is written
// back if the tree goes on. The slave is switched to non-canonical mode
// for the read, so that a line not yet ended can be read too (the kernel
// then makes the whole buffer readable).
func (d *ttyDump) takeData(id uint32) ([]proto.Message, error) {
	slave, master := d.lfds[id], d.lfds[id|1]
	tio, err := unix.IoctlGetTermios(slave, unix.TCGETS)
	if err != nil {
		return nil, os.NewSyscallError("ioctl TCGETS", err)
	}
	pkt := d.infos[id|1].GetPacketMode()
	var toSlave, toMaster []byte // what the slave, the master, is to read
	d.writeBack = append(d.writeBack, func(killed bool) error {
		var errs []error
		if !killed {
			errs = append(errs, ptyWriteBack(master, slave, toSlave, toMaster, tio))
		}
		if pkt {
			errs = append(errs, unix.IoctlSetPointerInt(master, unix.TIOCPKT, 1))
		}
		return errors.Join(errs...)
	})
	raw := *tio
	raw.Lflag &^= unix.ICANON
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 0, 0
	if err := unix.IoctlSetTermios(slave, unix.TCSETS, &raw); err != nil {
		return nil, os.NewSyscallError("ioctl TCSETS", err)
	}
	if toSlave, err = drain(slave); err != nil {
		return nil, fmt.Errorf("read pty %d: %w", id>>1, err)
	}
	if err := unix.IoctlSetTermios(slave, unix.TCSETS, tio); err != nil {
		return nil, os.NewSyscallError("ioctl TCSETS", err)
	}
	if pkt {
		if err := unix.IoctlSetPointerInt(master, unix.TIOCPKT, 0); err != nil {
			return nil, os.NewSyscallError("ioctl TIOCPKT", err)
		}
	}
	if toMaster, err = drain(master); err != nil {
		return nil, fmt.Errorf("read pty %d master: %w", id>>1, err)
	}
	var out []proto.Message
	if len(toSlave) > 0 {
		out = append(out, &tty.TtyDataEntry{TtyId: proto.Uint32(id), Data: toSlave})
	}
	if len(toMaster) > 0 {
		out = append(out, &tty.TtyDataEntry{TtyId: proto.Uint32(id | 1), Data: toMaster})
	}
	return out, nil
}

// drain reads everything a terminal has to read without waiting. The
// open file description is the task's: its flags are put back.
func drain(fd int) ([]byte, error) {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	defer unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	var out []byte
	buf := make([]byte, ptyBufSize)
	for {
		n, err := linux.Read(fd, buf)
		if n > 0 {
			out = append(out, buf[:n]...)
			continue
		}
		switch {
		case err == nil || errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EIO): // EIO: the other side is closed
			return out, nil
		default:
			return nil, err
		}
	}
}

// ptyWriteBack puts pending bytes into a pty pair again, then gives the
// slave its termios tio. The bytes were processed by the line discipline
// when they were first written and must not be again: for the time of the
// writes the slave has no echo, no CR/NL mapping, no output processing, no
// signal or editing characters; in canonical mode it stays canonical, so
// that the lines of its input are lines again and a line not yet ended
// still waits for its end.
func ptyWriteBack(master, slave int, toSlave, toMaster []byte, tio *unix.Termios) error {
	if len(toSlave) == 0 && len(toMaster) == 0 {
		return nil
	}
	plain := *tio
	plain.Iflag, plain.Oflag, plain.Lflag = 0, 0, tio.Lflag&unix.ICANON
	for _, c := range []int{unix.VERASE, unix.VKILL, unix.VEOF, unix.VEOL, unix.VEOL2} {
		plain.Cc[c] = 0 // _POSIX_VDISABLE
	}
	if err := unix.IoctlSetTermios(slave, unix.TCSETS, &plain); err != nil {
		return os.NewSyscallError("ioctl TCSETS", err)
	}
	if err := linux.WriteAll(master, toSlave); err != nil {
		return fmt.Errorf("pending input of the slave: %w", err)
	}
	// poll runs the line discipline on what was just written, before
	// the slave gets its own termios back.
	pfd := []unix.PollFd{{Fd: int32(slave), Events: unix.POLLIN}}
	unix.Poll(pfd, 0)
	if err := linux.WriteAll(slave, toMaster); err != nil {
		return fmt.Errorf("pending output of the slave: %w", err)
	}
	pfd[0].Fd = int32(master)
	unix.Poll(pfd, 0)
	if err := unix.IoctlSetTermios(slave, unix.TCSETS, tio); err != nil {
		return os.NewSyscallError("ioctl TCSETS", err)
	}
	return nil
}

// ttyRestore is the restore state of the terminals.
type ttyRestore struct {
	infos map[uint32]*tty.TtyInfoEntry
	data  map[uint32][]byte // tty-data.img by info id
	pairs map[int]*ptyPair  // by index
	term  *os.File          // the terminal of stasis (-j), once opened
	// procs are the processes of the tree, parents first, once
	// RestoreCttys has them: a /dev/tty is opened by one of its session.
	procs []Process
	// cttys are the controlling terminals, read once (see cttys).
	cttys []sessionTty
	// winchGroup is told to redraw once the tree runs (see
	// foregroundOwnTerminal).
	winchGroup int
}

// ptyPair is a pty pair made again, with its index.
type ptyPair struct {
	index     int
	master    *os.File
	handedOut bool // master is the file of its entry
	// orphanSent: master went to the caller (orphan.go).
	orphanSent bool
}

func restoreState(r *files.Restorer) (*ttyRestore, error) {
	s := files.RestoreState(r, "tty", func() *ttyRestore { return &ttyRestore{} })
	if s.infos != nil {
		return s, nil
	}
	s.infos, s.data, s.pairs = map[uint32]*tty.TtyInfoEntry{}, map[uint32][]byte{}, map[int]*ptyPair{}
	infos, err := images.ReadAll(r.Dir, "tty-info.img", func() *tty.TtyInfoEntry { return &tty.TtyInfoEntry{} })
	if err != nil {
		return nil, err
	}
	for _, e := range infos {
		if e.GetType() == tty.TtyType_PTY && (e.GetPty() == nil || e.GetPty().GetIndex() > maxPtyIndex) {
			return nil, fmt.Errorf("tty-info.img: entry %#x: pty without a valid index: %w", e.GetId(), images.ErrCorrupt)
		}
		s.infos[e.GetId()] = e
	}
	if r.Dir.Has("tty-data.img") {
		data, err := images.ReadAll(r.Dir, "tty-data.img", func() *tty.TtyDataEntry { return &tty.TtyDataEntry{} })
		if err != nil {
			return nil, err
		}
		for _, e := range data {
			if s.infos[e.GetTtyId()] == nil {
				return nil, fmt.Errorf("tty-data.img: data of tty %#x, which tty-info.img does not have: %w", e.GetTtyId(), images.ErrCorrupt)
			}
			s.data[e.GetTtyId()] = e.GetData()
		}
	}
	return s, nil
}

func openTty(r *files.Restorer, fe *fdinfo.FileEntry) (*os.File, error) {
	tfe := fe.GetTty()
	if fe.GetType() != fdinfo.FdTypes_TTY || tfe == nil {
		return nil, files.NotKind(fe, "a terminal")
	}
	s, err := restoreState(r)
	if err != nil {
		return nil, err
	}
	info := s.infos[tfe.GetTtyInfoId()]
	if info == nil {
		return nil, fmt.Errorf("reopen tty file id %d: tty info %#x is not in tty-info.img: %w", fe.GetId(), tfe.GetTtyInfoId(), images.ErrCorrupt)
	}
	f, err := openTtyInfo(r, s, info, tfe.GetFlags())
	if err != nil {
		return nil, fmt.Errorf("reopen tty file id %d (%s): %w", fe.GetId(), ttyName(info), err)
	}
	return f, nil
}

func ttyName(info *tty.TtyInfoEntry) string {
	switch info.GetType() {
	case tty.TtyType_PTY:
		if info.GetId()&1 == 1 {
			return fmt.Sprintf("master of pty %d", info.GetPty().GetIndex())
		}
		return fmt.Sprintf("/dev/pts/%d", info.GetPty().GetIndex())
	case tty.TtyType_CTTY:
		return "/dev/tty"
	}
	return fmt.Sprintf("%v tty %s", info.GetType(), ExternalTtyKey(uint64(info.GetRdev()), uint64(info.GetDev())))
}

// openTtyInfo opens one new open file description of a terminal side.
func openTtyInfo(r *files.Restorer, s *ttyRestore, info *tty.TtyInfoEntry, flags uint32) (*os.File, error) {
	key := ExternalTtyKey(uint64(info.GetRdev()), uint64(info.GetDev()))
	if f, ok := r.Inherited(key); ok {
		return f, nil
	}
	switch info.GetType() {
	case tty.TtyType_PTY:
		index := int(info.GetPty().GetIndex())
		if hungUp(info) {
			return openHungUp(index, flags)
		}
		if s.infos[uint32(index)<<1|1] == nil {
			if r.Opts.OrphanPtsMaster != nil {
				return orphanSlave(r, s, info, flags)
			}
			return ownTerminal(r, s, info, flags)
		}
		p, err := pairOf(r, s, index)
		if err != nil {
			return nil, err
		}
		if info.GetId()&1 == 1 {
			// One open of /dev/ptmx is one pair: its master has one
			// open file description, which every fd of it shares.
			if err := files.AnonSetfl(int(p.master.Fd()), flags); err != nil {
				return nil, err
			}
			p.handedOut = true // Restorer.Close closes it
			return p.master, nil
		}
		return p.openSlave(flags)
	case tty.TtyType_CTTY:
		// /dev/tty is the session's terminal: a new open of /dev/tty by
		// a member of the session, so that the fd is /dev/tty again (it
		// follows the session: it fails once the session loses its
		// terminal, as the dumped one would).
		if s.procs != nil && info.GetSid() != 0 {
			fl := int(flags&^unix.O_CREAT) &^ unix.O_CLOEXEC
			return openCtty(s.procs, int(info.GetSid()), fl)
		}
		for _, id := range slices.Sorted(maps.Keys(s.infos)) {
			e := s.infos[id]
			if e.GetType() == tty.TtyType_PTY && id&1 == 0 && e.GetSid() == info.GetSid() && info.GetSid() != 0 {
				return openTtyInfo(r, s, e, flags)
			}
		}
		return nil, fmt.Errorf("the controlling terminal of session %d is not in the images", info.GetSid())
	case tty.TtyType_EXT_TTY:
		return nil, fmt.Errorf("a terminal outside the tree: restore with --inherit-fd fd[N]:%s", key)
	}
	return nil, fmt.Errorf("terminal type %v: %w", info.GetType(), files.ErrUnsupported)
}

// ownTerminal opens the terminal stasis runs on again, for the slave of
// a pty whose master was outside the tree (-j, as criu).
func ownTerminal(r *files.Restorer, s *ttyRestore, info *tty.TtyInfoEntry, flags uint32) (*os.File, error) {
	if !r.Opts.ShellJob {
		return nil, fmt.Errorf("its master was outside the tree (a shell's terminal): restore with -j/--shell-job to give it the terminal of stasis restore, or with --inherit-fd fd[N]:%s",
			ExternalTtyKey(uint64(info.GetRdev()), uint64(info.GetDev())))
	}
	term, err := terminal(r)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", term.Fd()), int(flags&^unix.O_CREAT)|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen the terminal of stasis (%s): %w", term.Name(), os.NewSyscallError("open", err))
	}
	return files.NewAnonFile(fd, term.Name()), nil
}

// Terminal returns the terminal stasis runs on (its first standard fd
// that is one), for -j.
func terminal(r *files.Restorer) (*os.File, error) {
	s := files.RestoreState(r, "tty", func() *ttyRestore { return &ttyRestore{} })
	if s.term != nil {
		return s.term, nil
	}
	for fd := 0; fd <= 2; fd++ {
		if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
			name, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
			s.term = os.NewFile(uintptr(fd), name)
			return s.term, nil
		}
	}
	return nil, errors.New("-j/--shell-job: none of stdin, stdout and stderr of stasis restore is a terminal: run it on the terminal the tree is to get")
}

// ptyPair returns the pty pair of index, made the first time: a new open
// of /dev/ptmx gets the lowest free index, so stasis opens it until it
// gets index, then closes the others.
func pairOf(r *files.Restorer, s *ttyRestore, index int) (*ptyPair, error) {
	if p := s.pairs[index]; p != nil {
		return p, nil
	}
	ptmx := "/dev/ptmx"
	if r.Root != "" {
		// A container's ptys are of its own devpts instance.
		ptmx = r.Root + "/dev/pts/ptmx"
	}
	mf := takePrepared(ptmx, index) // made with the mounts (devpts.go)
	if mf == nil {
		master, err := openPtmxIndex(ptmx, index)
		if err != nil {
			return nil, err
		}
		mf = files.NewAnonFile(master, "/dev/ptmx")
	}
	p := &ptyPair{index: index, master: mf}
	r.OnDone(func() error {
		if p.handedOut {
			return nil
		}
		return p.master.Close()
	})
	if err := p.setup(r, s); err != nil {
		p.master.Close()
		return nil, fmt.Errorf("make pty %d: %w", index, err)
	}
	s.pairs[index] = p
	return p, nil
}

// ptsHolder names a process holding pty index, by its slave or its
// master (which alone keeps the index taken), for errors.
func ptsHolder(index int) string {
	want := fmt.Sprintf("/dev/pts/%d", index)
	h, ok := files.FindHolder(nil, func(pid int, fd, target string) bool {
		return target == want || isPtmx(target) && ptmxIndex(pid, fd) == index
	})
	if !ok {
		return "held by a process of another pid or mount namespace"
	}
	return fmt.Sprintf("held by pid %d, %s", h.Pid(), h.Comm())
}

func isPtmx(link string) bool { return link == "/dev/ptmx" || link == "/dev/pts/ptmx" }

// ptmxIndex is the pty index of a master another process holds, from the
// "tty-index:" line of its fdinfo, or -1.
func ptmxIndex(pid int, fd string) int {
	n, err := strconv.Atoi(fd)
	if err != nil {
		return -1
	}
	fi, err := proc.ReadFdinfo(pid, n)
	if err != nil {
		return -1
	}
	if v, err := strconv.Atoi(fi.Extra["tty-index"]); err == nil {
		return v
	}
	return -1
}

// openSlave opens the slave of the pair (TIOCGPTPEER: no path lookup, so
// whatever devpts /dev/pts is), never as a controlling terminal.
func (p *ptyPair) openSlave(flags uint32) (*os.File, error) {
	fl := int(flags)&(unix.O_ACCMODE|unix.O_NONBLOCK|unix.O_APPEND|unix.O_NOATIME) | unix.O_NOCTTY | unix.O_CLOEXEC
	fd, _, errno := unix.Syscall(unix.SYS_IOCTL, p.master.Fd(), unix.TIOCGPTPEER, uintptr(fl))
	if errno != 0 {
		return nil, fmt.Errorf("open /dev/pts/%d: %w", p.index, os.NewSyscallError("ioctl TIOCGPTPEER", errno))
	}
	return files.NewAnonFile(int(fd), fmt.Sprintf("/dev/pts/%d", p.index)), nil
}

// setup gives a new pair the state of its image: termios, window size,
// pending bytes, packet mode; lock and exclusive mode once every fd of it
// is open.
func (p *ptyPair) setup(r *files.Restorer, s *ttyRestore) error {
	mi, si := s.infos[uint32(p.index)<<1|1], s.infos[uint32(p.index)<<1]
	if err := unix.IoctlSetPointerInt(int(p.master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		return os.NewSyscallError("ioctl TIOCSPTLCK", err)
	}
	slave, err := p.openSlave(unix.O_RDWR)
	if err != nil {
		return err
	}
	defer slave.Close()
	mfd, sfd := int(p.master.Fd()), int(slave.Fd())
	var stio *unix.Termios
	for _, side := range []struct {
		fd   int
		info *tty.TtyInfoEntry
	}{{mfd, mi}, {sfd, si}} {
		if side.info == nil || side.info.GetTermios() == nil {
			continue
		}
		tio, err := termiosOnto(side.fd, side.info.GetTermios())
		if err != nil {
			return err
		}
		if side.fd == sfd {
			stio = tio
		}
		if err := unix.IoctlSetTermios(side.fd, unix.TCSETS, tio); err != nil {
			return os.NewSyscallError("ioctl TCSETS", err)
		}
		if lt := side.info.GetTermiosLocked(); lt != nil {
			l, err := termiosOnto(side.fd, lt)
			if err != nil {
				return err
			}
			if err := unix.IoctlSetTermios(side.fd, unix.TIOCSLCKTRMIOS, l); err != nil {
				return os.NewSyscallError("ioctl TIOCSLCKTRMIOS", err)
			}
		}
		if w := side.info.GetWinsize(); w != nil {
			ws := &unix.Winsize{Row: uint16(w.GetWsRow()), Col: uint16(w.GetWsCol()), Xpixel: uint16(w.GetWsXpixel()), Ypixel: uint16(w.GetWsYpixel())}
			if err := unix.IoctlSetWinsize(side.fd, unix.TIOCSWINSZ, ws); err != nil {
				return os.NewSyscallError("ioctl TIOCSWINSZ", err)
			}
		}
	}
	if err := slaveOwner(r, sfd, si); err != nil {
		return err
	}
	if stio == nil {
		if stio, err = unix.IoctlGetTermios(sfd, unix.TCGETS); err != nil {
			return os.NewSyscallError("ioctl TCGETS", err)
		}
	}
	if err := ptyWriteBack(mfd, sfd, s.data[uint32(p.index)<<1], s.data[uint32(p.index)<<1|1], stio); err != nil {
		return err
	}
	if mi.GetPacketMode() {
		if err := unix.IoctlSetPointerInt(mfd, unix.TIOCPKT, 1); err != nil {
			return os.NewSyscallError("ioctl TIOCPKT", err)
		}
	}
	r.BeforeRun(func() error {
		if si.GetExclusive() || mi.GetExclusive() {
			sl, err := p.openSlave(unix.O_RDWR)
			if err != nil {
				return err
			}
			defer sl.Close()
			for _, x := range []struct {
				fd int
				on bool
			}{{mfd, mi.GetExclusive()}, {int(sl.Fd()), si.GetExclusive()}} {
				if x.on {
					if err := unix.IoctlSetInt(x.fd, unix.TIOCEXCL, 0); err != nil {
						return fmt.Errorf("pty %d: %w", p.index, os.NewSyscallError("ioctl TIOCEXCL", err))
					}
				}
			}
		}
		if mi.GetLocked() {
			if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 1); err != nil {
				return fmt.Errorf("pty %d: %w", p.index, os.NewSyscallError("ioctl TIOCSPTLCK", err))
			}
		}
		return nil
	})
	return nil
}

// sessionTty is a terminal that was the controlling terminal of a session.
type sessionTty struct {
	Sid, Pgrp int      // the session and its foreground group
	File      *os.File // an open file of it in stasis; the caller must not close it
	Name      string
	// Own: the terminal of stasis itself (-j), whose session is stasis'.
	Own bool
}

// cttysOf returns the controlling terminals of the sessions of the images,
// each made (or opened) by now.
func cttysOf(r *files.Restorer) ([]sessionTty, error) {
	if !r.Dir.Has("tty-info.img") {
		return nil, nil
	}
	s, err := restoreState(r)
	if err != nil {
		return nil, err
	}
	var out []sessionTty
	for _, id := range slices.Sorted(maps.Keys(s.infos)) {
		info := s.infos[id]
		ext := info.GetType() == tty.TtyType_EXT_TTY
		if !ext && (info.GetType() != tty.TtyType_PTY || id&1 == 1) || info.GetSid() == 0 {
			continue
		}
		c := sessionTty{Sid: int(info.GetSid()), Pgrp: int(info.GetPgrp()), Name: ttyName(info)}
		if !ext && s.infos[id|1] == nil && r.Opts.OrphanPtsMaster != nil {
			// A pty whose master is the RPC client's (runc's
			// console socket): a new pair, its master sent there.
			p, err := orphanPair(r, s, int(info.GetPty().GetIndex()))
			if err != nil {
				return nil, err
			}
			c.File = p.master
		} else if ext || s.infos[id|1] == nil {
			// A terminal outside the tree (a console, a pty whose
			// master the caller holds): the one --inherit-fd gives,
			// which the session's leader takes again, or with -j
			// stasis' own.
			if f, ok := r.Inherited(ExternalTtyKey(uint64(info.GetRdev()), uint64(info.GetDev()))); ok {
				c.File = f
				r.OnDone(f.Close)
			} else if ext || !r.Opts.ShellJob {
				continue // openTty says what is missing
			} else {
				c.Own = true
				if c.File, err = terminal(r); err != nil {
					return nil, err
				}
			}
		} else {
			p, err := pairOf(r, s, int(info.GetPty().GetIndex()))
			if err != nil {
				return nil, err
			}
			c.File = p.master
		}
		out = append(out, c)
	}
	return out, nil
}

// shellJobTermios returns the termios the terminal of a shell job had, to
// give to stasis' terminal, or nil.
func shellJobTermios(r *files.Restorer, c sessionTty) (*unix.Termios, error) {
	s, err := restoreState(r)
	if err != nil {
		return nil, err
	}
	for _, info := range s.infos {
		if info.GetType() == tty.TtyType_PTY && info.GetId()&1 == 0 && int(info.GetSid()) == c.Sid && info.GetTermios() != nil {
			t, _, err := termiosOf(info.GetTermios())
			return t, err
		}
	}
	return nil, nil
}

// slaveOwner gives the slave's device file the owner and mode it had (a
// program that chowned its pts, as a terminal emulator or sshd does for
// its user): the owner is in the slave's tty info, the mode in the
// regular file entry of the slave's path (criu 4.2 restores both).
func slaveOwner(r *files.Restorer, sfd int, si *tty.TtyInfoEntry) error {
	if si == nil || si.Uid == nil || si.Gid == nil {
		return nil
	}
	if err := unix.Fchown(sfd, int(si.GetUid()), int(si.GetGid())); err != nil {
		return fmt.Errorf("owner %d:%d: %w", si.GetUid(), si.GetGid(), os.NewSyscallError("fchown", err))
	}
	for _, fe := range r.Files {
		t := fe.GetTty()
		if t == nil || t.GetTtyInfoId() != si.GetId() {
			continue
		}
		if rf := r.Files[t.GetRegfId()].GetReg(); rf != nil && rf.Mode != nil && rf.GetMode()&unix.S_IFMT == unix.S_IFCHR {
			if err := unix.Fchmod(sfd, rf.GetMode()&0o7777); err != nil {
				return fmt.Errorf("mode %o: %w", rf.GetMode()&0o7777, os.NewSyscallError("fchmod", err))
			}
			break
		}
	}
	return nil
}
