package proc

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func find(vmas []VMA, path string) *VMA {
	for i := range vmas {
		if vmas[i].Path == path {
			return &vmas[i]
		}
	}
	return nil
}

func TestParseMapsReal(t *testing.T) {
	for _, name := range []string{"sleep.maps", "self.maps", "python3.maps"} {
		t.Run(name, func(t *testing.T) {
			b := fixture(t, name)
			vmas, err := ParseMaps(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := len(vmas), bytes.Count(b, []byte("\n")); got != want {
				t.Fatalf("%d VMAs, want %d", got, want)
			}
			for i, v := range vmas {
				if v.Len() == 0 || v.Len()%4096 != 0 {
					t.Errorf("VMA %d: length %#x", i, v.Len())
				}
				if i > 0 && v.Start < vmas[i-1].End {
					t.Errorf("VMA %d overlaps the previous one", i)
				}
				if v.Path != "" && strings.HasPrefix(v.Path, " ") {
					t.Errorf("VMA %d: path %q keeps padding", i, v.Path)
				}
			}
			vvar, vclock, vdso := find(vmas, "[vvar]"), find(vmas, "[vvar_vclock]"), find(vmas, "[vdso]")
			if vvar == nil || vclock == nil || vdso == nil {
				t.Fatal("no [vvar]/[vvar_vclock]/[vdso]")
			}
			if vvar.Len() != 4*4096 || vclock.Len() != 2*4096 || vdso.Len() != 2*4096 || vdso.Start-vvar.Start != 0x6000 {
				t.Errorf("vdso layout %#x %#x %#x @+%#x", vvar.Len(), vclock.Len(), vdso.Len(), vdso.Start-vvar.Start)
			}
			if !vdso.Read || vdso.Write || !vdso.Exec || vdso.Shared {
				t.Errorf("[vdso] perms %+v", *vdso)
			}
			vs := find(vmas, "[vsyscall]")
			if vs == nil || vs.Start != 0xffffffffff600000 || vs.Read || !vs.Exec {
				t.Errorf("[vsyscall] = %+v", vs)
			}
			if st := find(vmas, "[stack]"); st == nil || !st.Write {
				t.Errorf("[stack] = %+v", st)
			}
		})
	}
}

func TestParseMapsPython(t *testing.T) {
	vmas, err := ParseMaps(bytes.NewReader(fixture(t, "python3.maps")))
	if err != nil {
		t.Fatal(err)
	}
	sp := find(vmas, "/tmp/stasis proc fixture/file with spaces (1).bin")
	if sp == nil || sp.Deleted || !sp.Shared || sp.Write || sp.Major != 0xfe || sp.Minor != 0 || sp.Inode != 9978034 {
		t.Errorf("file with spaces: %+v", sp)
	}
	gone := find(vmas, "/tmp/stasis proc fixture/gone soon")
	if gone == nil || !gone.Deleted || !gone.Shared || !gone.Write {
		t.Errorf("deleted file: %+v", gone)
	}
	if m := find(vmas, "/memfd:stasis memfd"); m == nil || !m.Deleted || m.Minor != 1 {
		t.Errorf("memfd: %+v", m)
	}
	if z := find(vmas, "/dev/zero"); z == nil || !z.Deleted || !z.Shared {
		t.Errorf("shared anon: %+v", z)
	}
	libc := find(vmas, "/usr/lib/x86_64-linux-gnu/libc.so.6")
	if libc == nil || libc.Offset != 0 {
		t.Fatalf("libc: %+v", libc)
	}
	var offs []uint64
	for _, v := range vmas {
		if v.Path == libc.Path {
			offs = append(offs, v.Offset)
		}
	}
	if want := []uint64{0, 0x26000, 0x17c000, 0x1cf000, 0x1d3000}; !reflect.DeepEqual(offs, want) {
		t.Errorf("libc offsets %#x, want %#x", offs, want)
	}
}

func TestParseMapsHandmade(t *testing.T) {
	vmas, err := ParseMaps(bytes.NewReader(fixture(t, "handmade.maps")))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		path    string
		deleted bool
	}{
		{"", false},
		{"", false},
		{"[anon:xyz]", false},
		{"[anon_shmem:shared name]", false},
		{"  two leading spaces", false},
		{"/tmp/trailing blanks  ", false},
		{"/tmp/a (deleted) b", false},
		{"/tmp/x (deleted)", true},
		{`/tmp/new\012line`, false},
		{"/tmp/cr\r", false},
		{"/dev/big", false},
		{"[vvar]", false},
		{"[vvar_vclock]", false},
		{"[vdso]", false},
		{"[vsyscall]", false},
		{"/tmp/short pad", false},
		{"/tmp/odd pad", true},
	}
	if len(vmas) != len(want) {
		t.Fatalf("%d VMAs, want %d", len(vmas), len(want))
	}
	for i, w := range want {
		if vmas[i].Path != w.path || vmas[i].Deleted != w.deleted {
			t.Errorf("VMA %d: path %q deleted %v, want %q %v", i, vmas[i].Path, vmas[i].Deleted, w.path, w.deleted)
		}
	}
	big := vmas[10]
	if big.Offset != 0x123456789000 || big.Major != 0x103 || big.Minor != 0x1f || big.Inode != 1<<64-1 {
		t.Errorf("wide header: %+v", big)
	}
	if s := vmas[3]; !s.Shared || !s.Read || !s.Write || s.Exec {
		t.Errorf("perms of %+v", s)
	}
}

func TestParseMapsErrors(t *testing.T) {
	for _, line := range []string{
		"",
		"zz-7f00 rw-p 00000000 00:00 0",
		"7f00-7e00 rw-p 00000000 00:00 0",
		"7f00-7f00 rw-p 00000000 00:00 0",
		"7f00-8f00 rwzp 00000000 00:00 0",
		"7f00-8f00 rw-q 00000000 00:00 0",
		"7f00-8f00 rw- 00000000 00:00 0",
		"7f00-8f00 rw-p 0000g000 00:00 0",
		"7f00-8f00 rw-p 00000000 0000 0",
		"7f00-8f00 rw-p 00000000 00:00 x",
		"7f00-8f00 rw-p 00000000 00:00",
		"7f00-8f00 rw-p 00000000 100000000:00 0",
	} {
		_, err := ParseMaps(strings.NewReader("7f-80 r--p 0 00:00 0\n" + line + "\n"))
		var se *SyntaxError
		if !errors.As(err, &se) || !errors.Is(err, ErrMalformed) || se.Line != 2 || se.File != "maps" {
			t.Errorf("%q: err %v", line, err)
		}
	}
}

func TestParseSmaps(t *testing.T) {
	for _, name := range []string{"sleep", "python3"} {
		t.Run(name, func(t *testing.T) {
			sm, err := ParseSmaps(bytes.NewReader(fixture(t, name+".smaps")))
			if err != nil {
				t.Fatal(err)
			}
			m, err := ParseMaps(bytes.NewReader(fixture(t, name+".maps")))
			if err != nil {
				t.Fatal(err)
			}
			if len(sm) != len(m) {
				t.Fatalf("smaps %d VMAs, maps %d", len(sm), len(m))
			}
			for i := range sm {
				a, b := sm[i], m[i]
				a.VmFlags, a.Rss = nil, 0
				if !reflect.DeepEqual(a, b) {
					t.Errorf("VMA %d: smaps %+v, maps %+v", i, a, b)
				}
				if len(sm[i].VmFlags) == 0 || sm[i].Rss > sm[i].Len() || sm[i].Rss%4096 != 0 {
					t.Errorf("VMA %d: flags %v rss %d", i, sm[i].VmFlags, sm[i].Rss)
				}
				if sm[i].Read != sm[i].HasFlag("rd") || sm[i].Write != sm[i].HasFlag("wr") {
					t.Errorf("VMA %d: perms disagree with VmFlags %v", i, sm[i].VmFlags)
				}
				if sm[i].Path == "[stack]" && !sm[i].HasFlag("gd") {
					t.Errorf("[stack] without gd: %v", sm[i].VmFlags)
				}
			}
			if name == "sleep" {
				if v := sm[0]; v.Path != "/usr/bin/sleep" || v.Rss != 8<<10 || !reflect.DeepEqual(v.VmFlags, []string{"rd", "mr", "mw", "me"}) {
					t.Errorf("first VMA %+v", v)
				}
			}
		})
	}
	if (VMA{}).HasFlag("rd") {
		t.Error("HasFlag on maps VMA")
	}
	for _, in := range []string{
		"Rss:   4 kB\n",
		"7f-80 r--p 0 00:00 0\nRss: 4 MB\n",
		"7f-80 r--p 0 00:00 0\nRss: x kB\n",
		"7f-80 r--p 0 00:00 0\nRss: 18446744073709551615 kB\n",
		"7f-80 r--p 0 00:00 0\nbogus line\n",
	} {
		if _, err := ParseSmaps(strings.NewReader(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: err %v", in, err)
		}
	}
}

func TestParseStat(t *testing.T) {
	st, err := ParseStat(bytes.NewReader(fixture(t, "sleep.stat")))
	if err != nil {
		t.Fatal(err)
	}
	want := &Stat{
		Pid: 13283, Comm: "sleep", State: 'S', PPid: 13242, Pgrp: 13241, Session: 2976, TtyNr: 0, Tpgid: -1,
		Flags: 4194304, Priority: 20, Nice: 0, NumThreads: 1, StartTime: 98446,
		StartCode: 94006149459968, EndCode: 94006149477897, StartStack: 140728960574928,
		RtPriority: 0, Policy: 0,
		StartData: 94006149491984, EndData: 94006149493248, StartBrk: 94006773633024,
		ArgStart: 140728960579809, ArgEnd: 140728960579820, EnvStart: 140728960579820, EnvEnd: 140728960581609,
		ExitCode: 0,
	}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("got  %+v\nwant %+v", st, want)
	}

	for name, comm := range map[string]string{
		"python3.stat":              "a) b (c) d",
		"python3-newline-comm.stat": "x)\ny) ",
		"handmade-kthread.stat":     "",
		"handmade-parens.stat":      "))) ) ((",
		"self.stat":                 "cat",
	} {
		st, err := ParseStat(bytes.NewReader(fixture(t, name)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if st.Comm != comm {
			t.Errorf("%s: comm %q, want %q", name, st.Comm, comm)
		}
		if name == "python3.stat" && (st.State != 'R' || st.NumThreads != 2 || st.PPid != 13241) {
			t.Errorf("%s: %+v", name, st)
		}
		if name == "handmade-kthread.stat" && (st.Priority != -100 || st.Nice != -20 || st.Flags&0x00200000 == 0 || st.RtPriority != 99 || st.Policy != 1 || st.ExitCode != 256) {
			t.Errorf("%s: %+v", name, st)
		}
		if name == "handmade-parens.stat" && (st.State != 'Z' || st.ExitCode != 9) {
			t.Errorf("%s: %+v", name, st)
		}
	}

	good := string(fixture(t, "sleep.stat"))
	for _, in := range []string{
		"",
		"13283 sleep S 1",
		"13283 (sleep S 1",
		"x (sleep) S 1",
		"13283 (sleep)S 13242",
		strings.Replace(good, " S ", " SS ", 1),
		strings.Replace(good, " 13242 ", " -x ", 1),
		strings.Replace(good, " 4194304 ", " 99999999999 ", 1),
		good[:len(good)-3] + "\n",
	} {
		if _, err := ParseStat(strings.NewReader(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: err %v", in, err)
		}
	}
}

func TestParseStatus(t *testing.T) {
	st, err := ParseStatus(bytes.NewReader(fixture(t, "python3.status")))
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "a) b (c) d" || st.Umask != 0o22 || st.State != 'R' || st.Tgid != 13242 || st.Pid != 13242 ||
		st.PPid != 13241 || st.Threads != 2 || st.Groups != nil || st.Kthread ||
		st.SigIgn != 0x1001000 || st.SigCgt != 0x100000002 || st.CapEff != 0x1fffeffffff || st.CapBnd != 0x1fffeffffff ||
		!reflect.DeepEqual(st.NSpid, []int{13242}) || !reflect.DeepEqual(st.NSsid, []int{2976}) {
		t.Errorf("python3: %+v", st)
	}

	st, err = ParseStatus(bytes.NewReader(fixture(t, "python3-newline-comm.status")))
	if err != nil || st.Name != "x)\ny) " {
		t.Errorf("escaped name: %q, %v", st.Name, err)
	}

	st, err = ParseStatus(bytes.NewReader(fixture(t, "handmade.status")))
	if err != nil {
		t.Fatal(err)
	}
	want := &Status{
		Name: `kworker/0:1\x`, Umask: 0o77, State: 'I', Tgid: 17, Pid: 17, PPid: 2,
		Uid: [4]uint32{1000, 1001, 1002, 1003}, Gid: [4]uint32{2000, 2001, 2002, 2003},
		Groups: []uint32{4, 24, 27, 1000},
		NSpid:  []int{17, 1}, NStgid: []int{17, 1}, NSpgid: []int{0, 0}, NSsid: []int{0, 0},
		Threads: 1, SigPnd: 1, ShdPnd: 1 << 63, SigBlk: 0xfffffffffffffeff, SigIgn: 1<<64 - 1,
		CapPrm: 0x1ffffffffff, CapEff: 0x1ffffffffff, CapBnd: 0x1ffffffffff,
		NoNewPrivs: 1, Seccomp: 2, SeccompFilters: 3,
	}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("got  %+v\nwant %+v", st, want)
	}

	st, err = ParseStatus(strings.NewReader("Name:\tkthreadd\nPid:\t2\nKthread:\t1\n"))
	if err != nil || !st.Kthread {
		t.Errorf("Kthread: %+v %v", st, err)
	}
	for _, in := range []string{
		"",
		"Name:\tx\n",
		"Pid:\t1\n",
		"Name:\tx\nPid:\tone\n",
		"Name:\tx\nPid:\t1\nUid:\t0\t0\t0\n",
		"Name:\tx\nPid:\t1\nSigBlk:\tzz\n",
		"Name:\tx\nPid:\t1\nUmask:\t0099\n",
		"Name:\tx\nPid:\t1\nGroups:\t1 -2\n",
		"Name:\tx\nPid:\t1\nNSpid:\t1 x\n",
		"Name:\tx\nPid:\t1\nState:\n",
	} {
		if _, err := ParseStatus(strings.NewReader(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: err %v", in, err)
		}
	}
}

func TestParseFdinfo(t *testing.T) {
	cases := map[string]struct {
		pos   uint64
		flags uint32
		mnt   int
		ino   uint64
		extra map[string]string
		lines int
	}{
		"fdinfo-reg":      {0, 0o2100000, 27, 9978034, map[string]string{}, 0},
		"fdinfo-pipe":     {0, 0o2000001, 16, 21392, map[string]string{}, 0},
		"fdinfo-flock":    {123, 0o2100002, 27, 9978034, map[string]string{"lock": "1: FLOCK  ADVISORY  WRITE 13242 fe:00:9978034 0 EOF"}, 1},
		"fdinfo-eventfd":  {0, 0o4002, 17, 1038, map[string]string{"eventfd-count": "7", "eventfd-id": "1", "eventfd-semaphore": "0"}, 3},
		"fdinfo-signalfd": {0, 0o2, 17, 1038, map[string]string{"sigmask": "0000000000000a00"}, 1},
		"fdinfo-timerfd": {0, 0o2, 17, 1038, map[string]string{"clockid": "1", "ticks": "0", "settime flags": "00",
			"it_value": "(99, 989048656)", "it_interval": "(5, 0)"}, 5},
		"fdinfo-pidfd":   {0, 0o2000002, 4, 13243, map[string]string{"Pid": "13242", "NSpid": "13242"}, 2},
		"fdinfo-socket":  {0, 0o2000002, 10, 21393, map[string]string{"scm_fds": "0"}, 1},
		"fdinfo-epoll":   {0, 0o2000002, 17, 1038, map[string]string{"tfd": "9 events:       19 data:                9  pos:0 ino:5390 sdev:f"}, 2},
		"fdinfo-inotify": {0, 0, 17, 1038, map[string]string{"inotify wd": "2 ino:9840a2 sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a2409800a3ad1e80"}, 2},
	}
	for name, w := range cases {
		fi, err := ParseFdinfo(bytes.NewReader(fixture(t, name)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fi.Pos != w.pos || fi.Flags != w.flags || fi.MntID != w.mnt || fi.Ino != w.ino || !reflect.DeepEqual(fi.Extra, w.extra) || len(fi.Lines) != w.lines {
			t.Errorf("%s: %+v", name, fi)
		}
	}
	fi, _ := ParseFdinfo(bytes.NewReader(fixture(t, "fdinfo-epoll")))
	if !strings.HasPrefix(fi.Lines[1], "tfd:       12 events: 80000019") {
		t.Errorf("epoll lines %q", fi.Lines)
	}
	fi, err := ParseFdinfo(strings.NewReader("pos:\t-2\nflags:\t0\n"))
	if err != nil || fi.Pos != 1<<64-2 {
		t.Errorf("negative pos: %+v %v", fi, err)
	}
	for _, in := range []string{"", "pos:\t0\n", "flags:\t0\n", "pos:\tx\nflags:\t0\n", "pos:\t0\nflags:\t9\n", "pos:\t0\nflags:\t0\nmnt_id:\tx\n", "pos:\t0\nflags:\t0\nino:\t-1\n"} {
		if _, err := ParseFdinfo(strings.NewReader(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: err %v", in, err)
		}
	}
}

func TestParseAuxv(t *testing.T) {
	a, err := ParseAuxv(fixture(t, "sleep.auxv"))
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 46 || a[0] != 33 || a[1] != 0x7fda3919a000 || a[6] != 6 || a[7] != 4096 || a[44] != 0 || a[45] != 0 {
		t.Errorf("auxv %#x", a)
	}
	if a, err := ParseAuxv(nil); a != nil || err != nil {
		t.Errorf("empty: %v %v", a, err)
	}
	for _, b := range [][]byte{make([]byte, 8), make([]byte, 17), append(make([]byte, 16), 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)} {
		if _, err := ParseAuxv(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%d bytes: err %v", len(b), err)
		}
	}
}

func TestParseMountinfo(t *testing.T) {
	ms, err := ParseMountinfo(bytes.NewReader(fixture(t, "python3.mountinfo")))
	if err != nil {
		t.Fatal(err)
	}
	root := Mount{ID: 27, ParentID: 1, Major: 254, Minor: 0, Root: "/", MountPoint: "/", Options: "rw,relatime",
		FSType: "ext4", Source: "/dev/vda", SuperOptions: "rw,discard,resv_strict,resuid=65534,resgid=65534"}
	found := false
	for _, m := range ms {
		if m.MountPoint == "/" {
			found = reflect.DeepEqual(m, root)
			if !found {
				t.Errorf("root mount %+v", m)
			}
		}
	}
	if !found {
		t.Error("no root mount")
	}

	ms, err = ParseMountinfo(bytes.NewReader(fixture(t, "handmade.mountinfo")))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{ID: 22, ParentID: 27, Major: 0, Minor: 21, Root: "/", MountPoint: "/proc", Options: "rw,relatime", Optional: []string{"shared:5"}, FSType: "proc", Source: "proc", SuperOptions: "rw"},
		{ID: 100, ParentID: 27, Major: 0, Minor: 50, Root: "/sub dir", MountPoint: "/mnt/with space\ttab", Options: "rw,nosuid",
			Optional: []string{"shared:12", "master:3", "propagate_from:4"}, FSType: "fuse.sshfs", Source: "user@host:/a b", SuperOptions: "rw,user_id=0,group_id=0"},
		{ID: 101, ParentID: 27, Major: 0, Minor: 51, Root: "/", MountPoint: "/mnt/empty-source", Options: "rw", Optional: []string{"unbindable"}, FSType: "tmpfs", Source: "", SuperOptions: "rw,size=4k"},
		{ID: 102, ParentID: 100, Major: 8, Minor: 1, Root: `/deleted\path`, MountPoint: `/mnt/back\slash`, Options: "ro", FSType: "ext4", Source: "/dev/sda1", SuperOptions: "ro,errors=remount-ro,data=ordered"},
	}
	if !reflect.DeepEqual(ms, want) {
		t.Errorf("got  %+v\nwant %+v", ms, want)
	}
	for _, in := range []string{
		"22 27 0:21 / /proc rw,relatime proc proc rw",
		"22 27 0:21 / /proc rw,relatime - proc proc",
		"22 27 0:21 / /proc rw,relatime - proc proc rw extra",
		"x 27 0:21 / /proc rw - proc proc rw",
		"22 x 0:21 / /proc rw - proc proc rw",
		"22 27 0-21 / /proc rw - proc proc rw",
		"22 27 0:x / /proc rw - proc proc rw",
	} {
		if _, err := ParseMountinfo(strings.NewReader(in + "\n")); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: err %v", in, err)
		}
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`a\040b`: "a b", `\134`: `\`, `\04`: `\04`, `\999`: `\999`, `x\`: `x\`, `\0401`: " 1",
	} {
		if got := unescapeOctal(in); got != want {
			t.Errorf("unescapeOctal(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		`a\nb`: "a\nb", `\\`: `\`, `\x`: `\x`, `\`: `\`, `\101`: "A", `\t\e`: "\t\x1b",
	} {
		if got := unescapeC(in); got != want {
			t.Errorf("unescapeC(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLongLine(t *testing.T) {
	in := "7f-80 r--p 0 00:00 0 /" + strings.Repeat("x", maxLine) + "\n"
	_, err := ParseMaps(strings.NewReader(in))
	var se *SyntaxError
	if !errors.As(err, &se) || se.Line != 1 {
		t.Errorf("err %v", err)
	}
	if _, err := ParseStat(strings.NewReader(strings.Repeat("1", maxFile+1))); !errors.Is(err, ErrMalformed) {
		t.Errorf("stat: %v", err)
	}
}

func TestParseChildren(t *testing.T) {
	c, err := parseChildren([]byte("12 13 7 "))
	if err != nil || !reflect.DeepEqual(c, []int{12, 13, 7}) {
		t.Errorf("%v %v", c, err)
	}
	if c, err := parseChildren(nil); err != nil || len(c) != 0 {
		t.Errorf("%v %v", c, err)
	}
	if _, err := parseChildren([]byte("12 x")); !errors.Is(err, ErrMalformed) {
		t.Error(err)
	}
}
