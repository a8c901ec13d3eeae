package ns

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/timens"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// Time namespace: timens-ID.img holds CLOCK_MONOTONIC and CLOCK_BOOTTIME
// as the namespace saw them at dump time (criu's meaning: not the
// offsets). The restore makes a new time namespace whose offsets bring
// both clocks back where they were, so that the time the tree spent
// dumped does not show. A time namespace takes offsets only before any
// task enters it, and clone(CLONE_NEWTIME) puts the child in at once, so
// the puppet unshares one (it becomes its time_for_children), stasis
// writes /proc/PUPPET/timens_offsets, and the root cloned from the puppet
// is born in it (as criu unshares in its own process, then forks).

const nsecPerSec = 1_000_000_000

func timeName(id uint32) string { return fmt.Sprintf("timens-%d.img", id) }

// timeOffsets reads /proc/PID/timens_offsets: "monotonic SEC NSEC" and
// "boottime SEC NSEC", in nanoseconds.
func timeOffsets(pid int) (mono, boot int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/timens_offsets", pid))
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			return 0, 0, fmt.Errorf("/proc/%d/timens_offsets: line %q", pid, sc.Text())
		}
		sec, err1 := strconv.ParseInt(f[1], 10, 64)
		nsec, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("/proc/%d/timens_offsets: line %q", pid, sc.Text())
		}
		switch f[0] {
		case "monotonic", "1":
			mono = sec*nsecPerSec + nsec
		case "boottime", "7":
			boot = sec*nsecPerSec + nsec
		}
	}
	return mono, boot, nil
}

func clockNs(id int32) int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(id, &ts)
	return ts.Nano()
}

func timespec(ns int64) *timens.Timespec {
	return &timens.Timespec{TvSec: proto.Uint64(uint64(ns / nsecPerSec)), TvNsec: proto.Uint64(uint64(ns % nsecPerSec))}
}

func dumpTime(dir *images.Dir, pid int, id uint32) error {
	mono, boot, err := timeOffsets(pid)
	if err != nil {
		return fmt.Errorf("time namespace of pid %d: %w", pid, err)
	}
	return dir.Write(timeName(id), &timens.TimensEntry{
		Monotonic: timespec(clockNs(unix.CLOCK_MONOTONIC) + mono),
		Boottime:  timespec(clockNs(unix.CLOCK_BOOTTIME) + boot),
	})
}

type timeImage struct {
	file       string
	mono, boot int64 // the clocks at dump time, in ns
}

func readTime(dir *images.Dir, id uint32) (*timeImage, error) {
	t := &timeImage{file: timeName(id)}
	e := &timens.TimensEntry{}
	if err := dir.ReadOne(t.file, e); err != nil {
		return nil, err
	}
	for _, c := range []struct {
		name string
		ts   *timens.Timespec
		dst  *int64
	}{{"monotonic", e.GetMonotonic(), &t.mono}, {"boottime", e.GetBoottime(), &t.boot}} {
		if c.ts == nil || c.ts.GetTvNsec() >= nsecPerSec || c.ts.GetTvSec() > 1<<40 {
			return nil, fmt.Errorf("image %s: %s clock %v: %w", t.file, c.name, c.ts, ErrBadImage)
		}
		*c.dst = int64(c.ts.GetTvSec())*nsecPerSec + int64(c.ts.GetTvNsec())
	}
	return t, nil
}

// Caller runs one system call in a task of the restore (the puppet).
type Caller interface {
	Call(name string, nr uintptr, args ...uint64) (uint64, error)
}

// restore makes a time namespace the puppet's children are born in, with
// the offsets that continue the dumped clocks.
func (t *timeImage) restore(puppet Caller, host int) error {
	if _, err := puppet.Call("unshare(CLONE_NEWTIME)", unix.SYS_UNSHARE, unix.CLONE_NEWTIME); err != nil {
		return fmt.Errorf("restore the time namespace of %s: %w", t.file, err)
	}
	line := func(name string, off int64) string {
		sec, nsec := off/nsecPerSec, off%nsecPerSec
		if nsec < 0 { // the kernel wants 0 <= nsec < 1 s
			sec, nsec = sec-1, nsec+nsecPerSec
		}
		return fmt.Sprintf("%s %d %d\n", name, sec, nsec)
	}
	text := line("monotonic", t.mono-clockNs(unix.CLOCK_MONOTONIC)) + line("boottime", t.boot-clockNs(unix.CLOCK_BOOTTIME))
	p := fmt.Sprintf("/proc/%d/timens_offsets", host)
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(text)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("restore the time namespace of %s: %s %q: %w", t.file, p, text, err)
	}
	return nil
}

// checkTimeForChildren refuses a task that unshared a time namespace and
// has not forked into it: the restore makes a time namespace only with
// the tree's root in it (as criu, which refuses nested time namespaces).
func checkTimeForChildren(pid int, own uint64) error {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/time_for_children", pid), &st); err != nil || st.Ino == own {
		return nil
	}
	return fmt.Errorf("pid %d unshared a time namespace its children are born in: a time namespace nested inside the tree is %w yet", pid, ErrNotSupported)
}
