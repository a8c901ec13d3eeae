package files

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/stasis-cr/stasis/internal/proc"
)

// The owner of an open file (F_SETOWN, F_SETSIG: criu's fown_entry) is
// whom the kernel signals about it: SIGIO of an O_ASYNC file, the break of
// a lease. It lives in the open file description, so stasis reads it on a
// copy of the fd. Only files that need it carry one: those with O_ASYNC (a
// socket, pipe, terminal or file that signals its owner when it is ready),
// with a lease (F_SETLEASE makes the taker the owner and sends it the
// break), and sockets (SIGURG goes to the owner); the others keep the
// empty owner, without the cost of a copy per fd. Every kind's entry has its fown field: the table fills it for all of
// them (setFown), the restore reads it back (ownerOf).

// fGetOwnerUids is F_GETOWNER_UIDS (include/uapi/asm-generic/fcntl.h,
// under CONFIG_CHECKPOINT_RESTORE, made for criu): the uid and euid the
// owner was set with, which decide whether it may be signalled
// (sigio_perm).
const fGetOwnerUids = 17

// The owner types of struct f_owner_ex (include/uapi/asm-generic/fcntl.h).
const (
	fOwnerTID  = 0
	fOwnerPGRP = 2
)

// needsFown says whether fd's owner is worth reading: O_ASYNC, a lease,
// or a socket (its owner gets SIGURG when urgent data comes, O_ASYNC or
// not).
func needsFown(fd *Fd) (bool, error) {
	if fd.Info.Flags&unix.O_ASYNC != 0 || strings.HasPrefix(fd.Target, "socket:") {
		return true, nil
	}
	locks, err := proc.FdinfoLocks(fd.Info)
	if err != nil {
		return false, fmt.Errorf("locks of %s: %w", fd, err)
	}
	for _, l := range locks {
		if l.Kind == proc.LockLease {
			return true, nil
		}
	}
	return false, nil
}

// dumpFown reads the owner of fd's open file.
func dumpFown(fd *Fd) (*fown.FownEntry, error) {
	cp, err := fd.Dup()
	if err != nil {
		return nil, err
	}
	defer unix.Close(cp)
	typ, pid, err := getOwnerEx(cp)
	if err != nil {
		return nil, fmt.Errorf("owner of %s: %w", fd, err)
	}
	uid, euid, err := getOwnerUids(cp)
	if err != nil {
		return nil, fmt.Errorf("owner of %s: %w", fd, err)
	}
	sig, err := unix.FcntlInt(uintptr(cp), unix.F_GETSIG, 0)
	if err != nil {
		return nil, fmt.Errorf("signal of %s: %w", fd, os.NewSyscallError("fcntl F_GETSIG", err))
	}
	return &fown.FownEntry{
		Uid: proto.Uint32(uid), Euid: proto.Uint32(euid), Signum: proto.Uint32(uint32(sig)),
		PidType: proto.Uint32(uint32(typ)), Pid: proto.Uint32(uint32(pid)),
	}, nil
}

// fileOwner is what a task restores of the owner of an open file: the
// signal (F_SETSIG, 0 for SIGIO) and, if Pid is not 0, F_SETOWN_EX of
// Type (F_OWNER_TID, F_OWNER_PID, F_OWNER_PGRP) and Pid.
type fileOwner struct {
	Signum    int
	Type, Pid int
	// Async: the file had O_ASYNC, which only the task may set again:
	// the kernel records the fd number of the F_SETFL that sets it, and
	// gives it as si_fd of every SIGIO (an open with O_ASYNC, or an
	// F_SETFL by stasis, would give it the wrong one).
	Async bool
}

// fownField finds the fown field of the kind's part of fe (reg, usk,
// isk, pipe, tty, ...: each has one, named so in criu's protos).
func fownField(fe *fdinfo.FileEntry) (protoreflect.Message, protoreflect.FieldDescriptor, bool) {
	var msg protoreflect.Message
	var fd protoreflect.FieldDescriptor
	fe.ProtoReflect().Range(func(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if f.Kind() != protoreflect.MessageKind {
			return true
		}
		m := v.Message()
		if ff := m.Descriptor().Fields().ByName("fown"); ff != nil && ff.Message() != nil && ff.Message().FullName() == "fown_entry" {
			msg, fd = m, ff
			return false
		}
		return true
	})
	return msg, fd, msg != nil
}

// setFown records the owner of fd in its entry, if it needs one.
func setFown(fe *fdinfo.FileEntry, fd *Fd) error {
	need, err := needsFown(fd)
	if err != nil || !need {
		return err
	}
	msg, field, ok := fownField(fe)
	if !ok {
		return nil // a kind whose entry has no owner
	}
	fo, err := dumpFown(fd)
	if err != nil {
		return err
	}
	msg.Set(field, protoreflect.ValueOfMessage(fo.ProtoReflect()))
	return nil
}

// ownerOf returns the owner the entry records, and false if it records
// none worth restoring (the empty owner every new file has).
func ownerOf(fe *fdinfo.FileEntry) (fileOwner, bool) {
	var fo *fown.FownEntry
	if msg, field, ok := fownField(fe); ok && msg.Has(field) {
		fo, _ = msg.Get(field).Message().Interface().(*fown.FownEntry)
	}
	o := fileOwner{Signum: int(fo.GetSignum()), Type: int(fo.GetPidType()), Pid: int(fo.GetPid()), Async: fileFlags(fe)&unix.O_ASYNC != 0}
	return o, o.Signum != 0 || o.Pid != 0 || o.Async
}

// fileFlags returns the open flags the kind's part of fe records (its
// "flags" field, as every kind with open flags names it in criu's protos).
func fileFlags(fe *fdinfo.FileEntry) uint32 {
	var flags uint32
	fe.ProtoReflect().Range(func(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if f.Kind() != protoreflect.MessageKind {
			return true
		}
		m := v.Message()
		if ff := m.Descriptor().Fields().ByName("flags"); ff != nil && ff.Kind() == protoreflect.Uint32Kind {
			flags = uint32(m.Get(ff).Uint())
			return false
		}
		return true
	})
	return flags
}

// check refuses an owner no fcntl would take: a caller of ownerOf checks
// it before injecting anything.
func (o fileOwner) check() error {
	if o.Signum < 0 || o.Signum > 64 {
		return fmt.Errorf("owner signal %d is no signal", o.Signum)
	}
	if o.Type < fOwnerTID || o.Type > fOwnerPGRP || o.Pid < 0 {
		return fmt.Errorf("owner %d of type %d is out of range", o.Pid, o.Type)
	}
	return nil
}

// ownerExArg is the struct f_owner_ex of fcntl(fd, F_SETOWN_EX, arg).
func (o fileOwner) ownerExArg() []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b[0:], uint32(o.Type))
	binary.LittleEndian.PutUint32(b[4:], uint32(o.Pid))
	return b
}
