package proc

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestFdinfoLocks(t *testing.T) {
	cases := map[string][]Lock{
		"fdinfo-posix-locks": {
			{Kind: LockPosix, Pid: 2208, Dev: "fe:00", Ino: 9978195, Start: 0, End: 9},
			{Kind: LockPosix, Write: true, Pid: 2208, Dev: "fe:00", Ino: 9978195, Start: 20, End: 29},
			{Kind: LockPosix, Write: true, Pid: 2208, Dev: "fe:00", Ino: 9978195, Start: 50, End: LockEOF},
		},
		"fdinfo-ofd-lock": {{Kind: LockOFD, Pid: -1, Dev: "fe:00", Ino: 9978195, Start: 40, End: 44}},
		"fdinfo-flock":    {{Kind: LockFlock, Write: true, Pid: 13242, Dev: "fe:00", Ino: 9978034, Start: 0, End: LockEOF}},
		"fdinfo-reg":      nil,
	}
	for name, want := range cases {
		fi, err := ParseFdinfo(bytes.NewReader(fixture(t, name)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := FdinfoLocks(fi)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, got, want)
		}
	}
}

func TestLockLen(t *testing.T) {
	for _, c := range []struct {
		start, end, len int64
	}{{0, 9, 10}, {20, 29, 10}, {50, LockEOF, 0}, {7, 7, 1}} {
		l := Lock{Start: c.start, End: c.end}
		if got := l.Len(); got != c.len {
			t.Errorf("[%d, %d]: len %d, want %d", c.start, c.end, got, c.len)
		}
	}
}

func TestParseLocksFile(t *testing.T) {
	var got []Lock
	for _, line := range strings.Split(strings.TrimSpace(string(fixture(t, "handmade.locks"))), "\n") {
		l, err := ParseLock(line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		got = append(got, l)
	}
	if len(got) != 8 {
		t.Fatalf("%d locks, want 8", len(got))
	}
	if w := got[2]; !w.Blocked || w.Kind != LockPosix || w.Pid != 2300 {
		t.Errorf("waiter: %+v", w)
	}
	if l := got[6]; l.Kind != LockLease || l.Write {
		t.Errorf("lease: %+v", l)
	}
	if l := got[7]; l.Dev != "103:02" || l.Ino != 12345678901 || !l.Write || l.Kind != LockFlock {
		t.Errorf("3-digit major: %+v", l)
	}
}

func TestParseLease(t *testing.T) {
	for line, want := range map[string]Lock{
		"lock:\t1: LEASE  ACTIVE    READ 7 fe:00:5 0 EOF":  {Kind: LockLease, Pid: 7, Dev: "fe:00", Ino: 5, End: LockEOF},
		"lock:\t1: LEASE  ACTIVE    WRITE 7 fe:00:5 0 EOF": {Kind: LockLease, Write: true, Pid: 7, Dev: "fe:00", Ino: 5, End: LockEOF},
		"lock:\t1: LEASE  BREAKING  UNLCK 7 fe:00:5 0 EOF": {Kind: LockLease, Breaking: true, Unlock: true, Pid: 7, Dev: "fe:00", Ino: 5, End: LockEOF},
		"lock:\t1: LEASE  BREAKING  READ 7 fe:00:5 0 EOF":  {Kind: LockLease, Breaking: true, Pid: 7, Dev: "fe:00", Ino: 5, End: LockEOF},
		"2: -> LEASE  BREAKER   WRITE 8 fe:00:5 0 EOF":     {Kind: LockLease, Blocked: true, Write: true, Pid: 8, Dev: "fe:00", Ino: 5, End: LockEOF},
	} {
		got, err := ParseLock(line)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%q:\n got %+v, %v\nwant %+v", line, got, err, want)
		}
	}
}

func TestParseLockBad(t *testing.T) {
	for _, in := range []string{
		"",
		"lock:",
		"x: POSIX  ADVISORY  WRITE 1 fe:00:1 0 EOF",
		"1 POSIX  ADVISORY  WRITE 1 fe:00:1 0 EOF",
		"1: POSIX  ADVISORY  WRITE 1 fe:00:1 0",
		"1: POSIX  ADVISORY  WRITE 1 fe:00:1 0 EOF extra",
		"1: BOGUS  ADVISORY  WRITE 1 fe:00:1 0 EOF",
		"1: LEASE  ACTIVE    UNLCK 1 fe:00:1 0 EOF",
		"1: POSIX  ADVISORY  UNLCK 1 fe:00:1 0 EOF",
		"1: FLOCK  ADVISORY  UNLCK 1 fe:00:1 0 EOF",
		"1: LEASE  ADVISORY  READ 1 fe:00:1 0 EOF",
		"1: POSIX  ADVISORY  WRITE x fe:00:1 0 EOF",
		"1: POSIX  ADVISORY  WRITE -2 fe:00:1 0 EOF",
		"1: POSIX  ADVISORY  WRITE 1 fe00:1 0 EOF",
		"1: POSIX  ADVISORY  WRITE 1 fe:00:x 0 EOF",
		"1: POSIX  ADVISORY  WRITE 1 fe:00:1 -1 EOF",
		"1: POSIX  ADVISORY  WRITE 1 fe:00:1 10 9",
		"1: POSIX  ADVISORY  WRITE 1 fe:00:1 0 99999999999999999999",
	} {
		_, err := ParseLock(in)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%q: err %v, want a SyntaxError", in, err)
		}
	}
	if l, err := ParseLock("lock:\t1: FLOCK  ADVISORY  READ 5 <none>:0 0 EOF"); err != nil || l.Dev != "" || l.Ino != 0 {
		t.Errorf("no inode: %+v, %v", l, err)
	}
	fi := &Fdinfo{Lines: []string{"lock:\t1: POSIX  ADVISORY  WRITE 1 fe:00:1 0"}}
	if _, err := FdinfoLocks(fi); err == nil {
		t.Error("FdinfoLocks accepted a bad lock line")
	}
}

func FuzzParseLock(f *testing.F) {
	for _, line := range strings.Split(string(fixture(f, "handmade.locks")), "\n") {
		f.Add(line)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLock(s)
		if err == nil && (l.Start < 0 || l.End < l.Start || l.Len() < 0) {
			t.Errorf("%q: accepted %+v", s, l)
		}
	})
}
