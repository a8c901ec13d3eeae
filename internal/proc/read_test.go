package proc

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil/require"
)

func TestReadSelf(t *testing.T) {
	pid := os.Getpid()
	maps, err := ReadMaps(pid)
	if err != nil || len(maps) == 0 {
		t.Fatalf("ReadMaps: %d, %v", len(maps), err)
	}
	smaps, err := ReadSmaps(pid)
	if err != nil || len(smaps) == 0 {
		t.Fatalf("ReadSmaps: %d, %v", len(smaps), err)
	}
	if find(smaps, "[stack]") == nil || !find(smaps, "[stack]").HasFlag("gd") {
		t.Errorf("no grows-down [stack] in smaps")
	}
	st, err := ReadStat(pid)
	if err != nil || st.Pid != pid || st.PPid != os.Getppid() || st.StartCode == 0 || st.NumThreads < 1 {
		t.Fatalf("ReadStat: %+v, %v", st, err)
	}
	ss, err := ReadStatus(pid)
	if err != nil || ss.Pid != pid || ss.Tgid != pid || ss.Threads < 1 || ss.Uid[1] != uint32(os.Geteuid()) {
		t.Fatalf("ReadStatus: %+v, %v", ss, err)
	}
	if len(ss.NSpid) == 0 || ss.NSpid[len(ss.NSpid)-1] <= 0 {
		t.Errorf("NSpid %v", ss.NSpid)
	}
	f, err := os.CreateTemp(t.TempDir(), "fdinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("hello")
	fi, err := ReadFdinfo(pid, int(f.Fd()))
	if err != nil || fi.Pos != 5 || fi.Flags&0o3 != 2 || fi.MntID == 0 || fi.Ino == 0 {
		t.Fatalf("ReadFdinfo: %+v, %v", fi, err)
	}
	auxv, err := ReadAuxv(pid)
	if err != nil || len(auxv) < 4 {
		t.Fatalf("ReadAuxv: %v, %v", auxv, err)
	}
	var pagesz uint64
	for i := 0; i+1 < len(auxv); i += 2 {
		if auxv[i] == 6 { // AT_PAGESZ
			pagesz = auxv[i+1]
		}
	}
	if pagesz != uint64(os.Getpagesize()) {
		t.Errorf("AT_PAGESZ %d", pagesz)
	}
	ms, err := ReadMountinfo(pid)
	if err != nil || len(ms) == 0 {
		t.Fatalf("ReadMountinfo: %v, %v", ms, err)
	}
	tids, err := Tasks(pid)
	if err != nil || !slices.Contains(tids, pid) || !slices.IsSorted(tids) {
		t.Fatalf("Tasks: %v, %v", tids, err)
	}
}

func TestChildren(t *testing.T) {
	cmd := exec.Command(require.Tool(t, "sleep"), "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := os.Getpid()
	deadline := time.Now().Add(5 * time.Second)
	for {
		tids, err := Tasks(pid)
		if err != nil {
			t.Fatal(err)
		}
		var all []int
		for _, tid := range tids {
			c, err := Children(pid, tid)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
			all = append(all, c...)
		}
		if slices.Contains(all, cmd.Process.Pid) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d not in any children file: %v", cmd.Process.Pid, all)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReadErrorsNamePath(t *testing.T) {
	const nopid = 1 << 30 // above PID_MAX_LIMIT
	_, err := ReadMaps(nopid)
	if err == nil || !strings.Contains(err.Error(), "/proc/1073741824/maps") || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadMaps: %v", err)
	}
	if _, err := ReadFdinfo(os.Getpid(), 1<<30); err == nil || !strings.Contains(err.Error(), "fdinfo/1073741824") {
		t.Errorf("ReadFdinfo: %v", err)
	}
	if _, err := Children(nopid, nopid); err == nil || !strings.Contains(err.Error(), "task/1073741824/children") {
		t.Errorf("Children: %v", err)
	}
	err = named("/proc/1/stat", &SyntaxError{File: "stat", Msg: "bad"})
	if err.Error() != "/proc/1/stat: stat: bad" || !errors.Is(err, ErrMalformed) {
		t.Errorf("named: %v", err)
	}
}
