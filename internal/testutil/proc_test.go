package testutil

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestReadStatSelf(t *testing.T) {
	st, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.PPid != os.Getppid() || st.State == 0 || st.Comm == "" {
		t.Errorf("ReadStat(self) = %+v, want ppid %d", st, os.Getppid())
	}
	if c := Comm(os.Getpid()); c != st.Comm {
		t.Errorf("Comm = %q, stat comm %q", c, st.Comm)
	}
}

func TestMapsSelf(t *testing.T) {
	maps, err := Maps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(maps, func(m MapsLine) bool { return m.Path == "[stack]" }) {
		t.Errorf("no [stack] in %v", maps)
	}
}

func TestExitCode(t *testing.T) {
	for _, c := range []struct {
		script string
		want   int
	}{{"exit 0", 0}, {"exit 3", 3}, {"kill -TERM $$", 143}, {"kill -KILL $$", 137}} {
		cmd := exec.Command("sh", "-c", c.script)
		cmd.Run()
		if got := exitCode(cmd.ProcessState.Sys().(syscall.WaitStatus)); got != c.want {
			t.Errorf("%q: exit code %d, want %d", c.script, got, c.want)
		}
	}
}

func TestLastLines(t *testing.T) {
	if got := lastLines("a\nb\nc\n", 2); !strings.HasSuffix(got, "b\nc") || !strings.Contains(got, "1 lines before") {
		t.Errorf("lastLines = %q", got)
	}
	if got := lastLines("a\n", 5); got != "a" {
		t.Errorf("lastLines = %q", got)
	}
}
