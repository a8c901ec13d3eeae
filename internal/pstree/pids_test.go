package pstree

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/proc"
)

// TestPidInUseNamesZombieParent: a pid held by a zombie names the parent
// that has not reaped it.
func TestPidInUseNamesZombieParent(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	pid := cmd.Process.Pid
	for i := 0; i < 200; i++ {
		if st, err := proc.ReadStat(pid); err == nil && st.State == 'Z' {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	msg := PidInUse(pid).Error()
	if want := fmt.Sprintf("a zombie its parent, pid %d", os.Getpid()); !strings.Contains(msg, want) {
		t.Errorf("PidInUse(%d) = %q, want it to contain %q", pid, msg, want)
	}
}
