package proc

import (
	"math"
	"strconv"
	"strings"
)

// LockKind is the class of a file lock as /proc/locks and the "lock:"
// lines of fdinfo name it (lock_get_status in fs/locks.c).
type LockKind string

// The kinds the kernel prints. POSIX locks belong to a process (its file
// table), FLOCK and OFDLCK locks to an open file description.
const (
	LockPosix  LockKind = "POSIX"
	LockFlock  LockKind = "FLOCK"
	LockOFD    LockKind = "OFDLCK"
	LockLease  LockKind = "LEASE"
	LockAccess LockKind = "ACCESS" // a transient lock of mandatory locking, gone since 5.15
)

// LockEOF is the End of a lock that reaches the end of the file, whatever
// its size ("EOF" in the file, OFFSET_MAX in the kernel).
const LockEOF = math.MaxInt64

// Lock is one line of /proc/locks, or one "lock:" line of an fdinfo.
type Lock struct {
	Kind  LockKind
	Write bool // WRITE, else READ (or UNLCK, see Unlock)
	// Breaking: a lease being broken (BREAKING): its type is then the
	// one it is being broken to (target_leasetype in fs/locks.c), which
	// UNLCK (Unlock) is only for such a lease.
	Breaking bool
	Unlock   bool
	Pid      int    // the locker's pid; -1 for OFD locks, which have none
	Dev      string // "MAJ:MIN" in hex as printed, "" if the file has no inode
	Ino      uint64
	Start    int64
	End      int64 // the last byte locked, inclusive; LockEOF for "to the end"
	// Blocked: a "->" line of /proc/locks, a waiter, not a lock held.
	Blocked bool
}

// Len is the lock's l_len as fcntl(2) takes it: 0 means to the end of the
// file.
func (l *Lock) Len() int64 {
	if l.End == LockEOF {
		return 0
	}
	return l.End - l.Start + 1
}

// ParseLock parses a lock line as printed by lock_get_status:
//
//	1: POSIX  ADVISORY  WRITE 13242 fe:00:9978034 0 EOF
//	2: OFDLCK ADVISORY  READ -1 fe:00:9978195 40 44
//	3: FLOCK  ADVISORY  WRITE 2001 08:01:7864554 0 EOF
//	4: -> POSIX  ADVISORY  WRITE 2002 08:01:7864554 0 EOF   (a waiter)
//	5: LEASE  ACTIVE    READ 2003 08:01:7864554 0 EOF
//	6: LEASE  BREAKING  UNLCK 2003 08:01:7864554 0 EOF  (being broken to F_UNLCK)
//	7: -> LEASE  BREAKER  WRITE 2004 08:01:7864554 0 EOF (an opener waiting)
//
// with or without the "lock:" key of fdinfo in front.
func ParseLock(line string) (Lock, error) {
	s := strings.TrimPrefix(line, "lock:")
	f := strings.Fields(s)
	bad := func(what string) (Lock, error) {
		return Lock{}, syntaxErr("locks", 0, "%s in lock line %q", what, line)
	}
	if len(f) == 0 || !strings.HasSuffix(f[0], ":") {
		return bad("no id")
	}
	if _, err := strconv.ParseUint(strings.TrimSuffix(f[0], ":"), 10, 64); err != nil {
		return bad("bad id")
	}
	f = f[1:]
	var l Lock
	if len(f) > 0 && f[0] == "->" {
		l.Blocked = true
		f = f[1:]
	}
	// kind, mode (ADVISORY, or ACTIVE/BREAKING/BREAKER for leases), type,
	// pid, dev:ino, start, end
	if len(f) != 7 {
		return bad("want 7 fields after the id")
	}
	switch k := LockKind(f[0]); k {
	case LockPosix, LockFlock, LockOFD, LockLease, LockAccess:
		l.Kind = k
	default:
		return bad("unknown kind " + f[0])
	}
	if l.Kind == LockLease {
		switch f[1] {
		case "ACTIVE":
		case "BREAKING":
			l.Breaking = true
		case "BREAKER":
			// the lease of an opener that waits for the break: a waiter
			l.Blocked = true
		default:
			return bad("unknown lease state " + f[1])
		}
	}
	switch f[2] {
	case "WRITE":
		l.Write = true
	case "READ":
	case "UNLCK":
		// Only a lease being broken shows it: the type it is being
		// broken to. MSNFS/RW of old LOCK_MAND are refused too.
		if !l.Breaking {
			return bad("type UNLCK of a lock that is no lease being broken")
		}
		l.Unlock = true
	default:
		return bad("unknown type " + f[2])
	}
	pid, err := strconv.Atoi(f[3])
	if err != nil || pid < -1 {
		return bad("bad pid")
	}
	l.Pid = pid
	if f[4] != "<none>:0" {
		i := strings.LastIndexByte(f[4], ':')
		if i <= 0 || strings.Count(f[4], ":") != 2 {
			return bad("bad device:inode")
		}
		l.Dev = f[4][:i]
		if l.Ino, err = strconv.ParseUint(f[4][i+1:], 10, 64); err != nil {
			return bad("bad inode")
		}
	}
	if l.Start, err = strconv.ParseInt(f[5], 10, 64); err != nil || l.Start < 0 {
		return bad("bad start")
	}
	if f[6] == "EOF" {
		l.End = LockEOF
	} else if l.End, err = strconv.ParseInt(f[6], 10, 64); err != nil || l.End < l.Start {
		return bad("bad end")
	}
	return l, nil
}

// FdinfoLocks returns the locks an fdinfo shows: those taken through this
// very open file description, and of its POSIX locks only those of the
// process whose fdinfo it is (__show_fd_locks in fs/locks.c).
func FdinfoLocks(fi *Fdinfo) ([]Lock, error) {
	var out []Lock
	for _, line := range fi.Lines {
		if !strings.HasPrefix(line, "lock:") {
			continue
		}
		l, err := ParseLock(line)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}
