package core

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/seccomp"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestSeccompFilter dumps a task with two filters and its child, which
// inherited them, then installs the chain from the encoded image into a
// fresh task: same filters in the same order (the victim's getppid errno
// depends on it), shared by parent and child in the table.
func TestSeccompFilter(t *testing.T) {
	src := startVictim(t, "seccomp-fork")
	child, err := strconv.Atoi(src.ready)
	if err != nil {
		t.Fatalf("ready line %q", src.ready)
	}
	t.Cleanup(func() { _ = unix.Kill(child, unix.SIGKILL) })

	st := &SeccompTable{}
	var want []seccompFilter
	var idx [2]uint32
	for i, pid := range []int{src.pid, child} {
		status, err := proc.ReadStatus(pid)
		if err != nil {
			t.Fatal(err)
		}
		if status.Seccomp != 2 || status.SeccompFilters != 2 {
			t.Fatalf("pid %d: seccomp %d filters %d", pid, status.Seccomp, status.SeccompFilters)
		}
		withHeld(t, pid, func(h *held) error {
			modes, idxs, err := st.DumpProcess([]int{pid}, []int{status.Seccomp})
			if err != nil {
				return err
			}
			if modes[0] != criucore.SeccompMode_filter {
				t.Errorf("pid %d: mode %v", pid, modes[0])
			}
			idx[i] = idxs[0]
			if i == 0 {
				want, err = readSeccompChain(pid)
			}
			return err
		})
	}
	if len(st.Filters) != 2 || idx[0] != idx[1] {
		t.Fatalf("table of %d filters, parent at %d, child at %d: want 2, shared", len(st.Filters), idx[0], idx[1])
	}
	chain, err := SeccompChain(st.Filters, criucore.SeccompMode_filter, idx[0])
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range chain {
		// A single-threaded process gets TSYNC, as criu does.
		if !bytes.Equal(f.GetFilter(), want[i].prog) || f.GetFlags() != want[i].flags|unix.SECCOMP_FILTER_FLAG_TSYNC {
			t.Errorf("chain[%d]: flags %#x, %d bytes; want flags %#x|TSYNC, %d bytes", i, f.GetFlags(), len(f.GetFilter()), want[i].flags, len(want[i].prog))
		}
	}
	if want[1].flags != unix.SECCOMP_FILTER_FLAG_LOG {
		t.Errorf("newer filter dumped with flags %#x, want LOG", want[1].flags)
	}

	// Through seccomp.img, for proto2 field presence (prev), and through
	// crit, which must read what criu would.
	dir, err := images.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.Write("seccomp.img", st.Entry()); err != nil {
		t.Fatal(err)
	}
	img := &seccomp.SeccompEntry{}
	if err := dir.ReadOne("seccomp.img", img); err != nil {
		t.Fatal(err)
	}
	critCheckSeccomp(t, filepath.Join(dir.Path, "seccomp.img"), st)

	dst := startVictim(t, "target")
	withHeld(t, dst.pid, func(h *held) error {
		if err := RestoreSeccomp(h.task(), img.GetSeccompFilters(), criucore.SeccompMode_filter, idx[0]); err != nil {
			return err
		}
		got, err := readSeccompChain(dst.pid)
		if err != nil {
			return err
		}
		if len(got) != len(want) {
			t.Fatalf("restored %d filters, want %d", len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i].prog, want[i].prog) || got[i].flags != want[i].flags {
				t.Errorf("restored filter %d differs (flags %#x, want %#x)", i, got[i].flags, want[i].flags)
			}
		}
		return nil
	})
	status, err := proc.ReadStatus(dst.pid)
	if err != nil {
		t.Fatal(err)
	}
	if status.Seccomp != 2 || status.SeccompFilters != 2 {
		t.Errorf("restored task: seccomp %d filters %d, want 2 2", status.Seccomp, status.SeccompFilters)
	}
	if a := dst.ask(t, 'p'); a != "getppid -1 13" {
		t.Errorf("restored task's getppid: %q, want EACCES from the newest filter", a)
	}
	if a := dst.ask(t, 'u'); a != "uname -1 1" {
		t.Errorf("restored task's uname: %q, want EPERM from the older filter", a)
	}
}

// critCheckSeccomp decodes seccomp.img with Debian's crit and compares
// the chain links and flags.
func critCheckSeccomp(t *testing.T, path string, st *SeccompTable) {
	t.Helper()
	crit := testutil.RequireTool(t, "crit")
	out, err := exec.Command(crit, "decode", "-i", path).Output()
	if err != nil {
		t.Fatalf("crit decode -i %s: %v", path, err)
	}
	var img struct {
		Magic   string
		Entries []struct {
			SeccompFilters []struct {
				Filter string
				Prev   *uint32
				Flags  uint32
			} `json:"seccomp_filters"`
		}
	}
	if err := json.Unmarshal(out, &img); err != nil {
		t.Fatalf("crit output: %v\n%s", err, out)
	}
	if img.Magic != "SECCOMP" || len(img.Entries) != 1 || len(img.Entries[0].SeccompFilters) != len(st.Filters) {
		t.Fatalf("crit reads %s", out)
	}
	for i, f := range img.Entries[0].SeccompFilters {
		want := st.Filters[i]
		if (f.Prev == nil) != (want.Prev == nil) || (f.Prev != nil && *f.Prev != want.GetPrev()) || f.Flags != want.GetFlags() || f.Filter == "" {
			t.Errorf("crit: filter %d: %+v, want prev %v flags %#x", i, f, want.Prev, want.GetFlags())
		}
	}
}

// TestSeccompStrict restores strict mode the way criu does: the task is
// traced with PTRACE_O_SUSPEND_SECCOMP (see hold), so stasis can still
// inject calls after it; after the detach, the first call strict mode
// forbids kills it.
func TestSeccompStrict(t *testing.T) {
	src := startVictim(t, "strict")
	status, err := proc.ReadStatus(src.pid)
	if err != nil {
		t.Fatal(err)
	}
	st := &SeccompTable{}
	var mode criucore.SeccompMode
	withHeld(t, src.pid, func(h *held) error {
		mode, _, err = st.DumpThread(src.pid, status.Seccomp)
		return err
	})
	if mode != criucore.SeccompMode_strict || len(st.Filters) != 0 {
		t.Fatalf("dumped mode %v with %d filters, want strict", mode, len(st.Filters))
	}

	dst := startVictim(t, "target")
	withHeld(t, dst.pid, func(h *held) error {
		if err := RestoreSeccomp(h.task(), nil, mode, 0); err != nil {
			return err
		}
		_, err := h.t.Call("getpid while seccomp is suspended", unix.SYS_GETPID)
		return err
	})
	if st, err := proc.ReadStatus(dst.pid); err != nil || st.Seccomp != 1 {
		t.Fatalf("restored task: seccomp %v (%v), want 1", st.Seccomp, err)
	}
	if a := dst.ask(t, 's'); a != "alrm 0 0 0 usr1 0 0 0" {
		t.Errorf("restored task answers %q", a)
	}
	if ws := dst.wait(t, 'p'); !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		t.Errorf("getppid in strict mode: status %v, want killed by SIGKILL", ws)
	}
}

// TestSeccompTableShare checks the dedup rules on made-up chains: an
// entry names its successor, so only identical tails are shared.
func TestSeccompTableShare(t *testing.T) {
	f := func(b byte) seccompFilter { return seccompFilter{prog: bytes.Repeat([]byte{b}, 8)} }
	st := &SeccompTable{}
	ab := st.add([]seccompFilter{f('a'), f('b')})
	if again := st.add([]seccompFilter{f('a'), f('b')}); again != ab || len(st.Filters) != 2 {
		t.Fatalf("same chain: index %d (first %d), %d filters", again, ab, len(st.Filters))
	}
	abc := st.add([]seccompFilter{f('a'), f('b'), f('c')})
	xb := st.add([]seccompFilter{f('x'), f('b')})
	if len(st.Filters) != 6 {
		t.Errorf("%d filters, want 6 (a,b + c,b',a' + x sharing b)", len(st.Filters))
	}
	logged := f('b')
	logged.flags = unix.SECCOMP_FILTER_FLAG_LOG
	st.add([]seccompFilter{logged})
	if len(st.Filters) != 7 {
		t.Errorf("other flags must not share: %d filters", len(st.Filters))
	}
	for _, c := range []struct {
		idx  uint32
		want string
	}{{ab, "ab"}, {abc, "abc"}, {xb, "xb"}} {
		chain, err := SeccompChain(st.Filters, criucore.SeccompMode_filter, c.idx)
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		for _, f := range chain {
			got = append(got, f.GetFilter()[0])
		}
		if string(got) != c.want {
			t.Errorf("chain at %d installs %q, want %q", c.idx, got, c.want)
		}
	}
}

func TestSeccompTSyncConvention(t *testing.T) {
	a := []seccompFilter{{prog: make([]byte, 8)}}
	b := []seccompFilter{{prog: bytes.Repeat([]byte{1}, 8)}}
	fl, dis := criucore.SeccompMode_filter, criucore.SeccompMode_disabled
	for _, c := range []struct {
		name   string
		modes  []criucore.SeccompMode
		chains [][]seccompFilter
		want   bool
	}{
		{"one thread", []criucore.SeccompMode{fl}, [][]seccompFilter{a}, true},
		{"same chains", []criucore.SeccompMode{fl, fl}, [][]seccompFilter{a, a}, true},
		{"other chain", []criucore.SeccompMode{fl, fl}, [][]seccompFilter{a, b}, false},
		{"thread without", []criucore.SeccompMode{fl, dis}, [][]seccompFilter{a, nil}, false},
		{"leader without", []criucore.SeccompMode{dis, fl}, [][]seccompFilter{nil, a}, false},
	} {
		if got := tsyncable(c.modes, c.chains); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestSeccompChainCorrupt(t *testing.T) {
	ok := func() *seccomp.SeccompFilter { return &seccomp.SeccompFilter{Filter: make([]byte, 8)} }
	loop := []*seccomp.SeccompFilter{ok(), ok()}
	loop[0].Prev, loop[1].Prev = proto.Uint32(1), proto.Uint32(0)
	far := ok()
	far.Prev = proto.Uint32(7)
	for _, c := range []struct {
		name    string
		filters []*seccomp.SeccompFilter
		mode    criucore.SeccompMode
		index   uint32
	}{
		{"index past the table", []*seccomp.SeccompFilter{ok()}, criucore.SeccompMode_filter, 1},
		{"prev past the table", []*seccomp.SeccompFilter{far}, criucore.SeccompMode_filter, 0},
		{"loop", loop, criucore.SeccompMode_filter, 0},
		{"odd length", []*seccomp.SeccompFilter{{Filter: make([]byte, 12)}}, criucore.SeccompMode_filter, 0},
		{"empty filter", []*seccomp.SeccompFilter{{}}, criucore.SeccompMode_filter, 0},
		{"too long", []*seccomp.SeccompFilter{{Filter: make([]byte, 8*4097)}}, criucore.SeccompMode_filter, 0},
		{"unknown mode", nil, criucore.SeccompMode(7), 0},
	} {
		if _, err := SeccompChain(c.filters, c.mode, c.index); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}
