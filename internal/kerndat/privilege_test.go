package kerndat

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func capSet(cs ...int) uint64 {
	var v uint64
	for _, c := range cs {
		v |= 1 << uint(c)
	}
	return v
}

// TestPrivilegeCheck: root passes; without CAP_SYS_ADMIN,
// CAP_CHECKPOINT_RESTORE and --unprivileged are both required, each
// refusal saying what is missing.
func TestPrivilegeCheck(t *testing.T) {
	root := Privilege{Uid: 0, Eff: capSet(unix.CAP_SYS_ADMIN, unix.CAP_CHECKPOINT_RESTORE)}
	cr := Privilege{Uid: 1000, Eff: capSet(unix.CAP_CHECKPOINT_RESTORE)}
	none := Privilege{Uid: 1000}
	for _, c := range []struct {
		p      Privilege
		unpriv bool
		want   string // "" for no error
	}{
		{root, false, ""},
		{root, true, ""},
		{cr, true, ""},
		{cr, false, "needs --unprivileged"},
		{none, true, "dump needs root, or CAP_CHECKPOINT_RESTORE"},
		{none, false, "dump needs root, or CAP_CHECKPOINT_RESTORE"},
	} {
		err := c.p.Check("dump", c.unpriv)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v unprivileged=%v: %v", c.p, c.unpriv, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrPrivilege)):
			t.Errorf("%+v unprivileged=%v: %v, want %q and ErrPrivilege", c.p, c.unpriv, err, c.want)
		}
	}
}

// TestPrivilegeExplain: an EPERM or EACCES without CAP_SYS_ADMIN is
// explained and stays wrapped; other errors, and any error of root, are
// returned as they are.
func TestPrivilegeExplain(t *testing.T) {
	cr := Privilege{Uid: 1000, Eff: capSet(unix.CAP_CHECKPOINT_RESTORE)}
	root := Privilege{Eff: capSet(unix.CAP_SYS_ADMIN)}
	eperm := fmt.Errorf("ptrace seize 1: %w", unix.EPERM)
	err := cr.Explain("dump", 1, eperm)
	if !errors.Is(err, unix.EPERM) || !errors.Is(err, ErrPrivilege) {
		t.Errorf("explained error %v does not wrap EPERM and ErrPrivilege", err)
	}
	for _, want := range []string{"dump needs root", "CAP_CHECKPOINT_RESTORE, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH over pid 1, owned by uid 0", "setcap cap_sys_ptrace,cap_dac_read_search+eip", "ptrace seize 1", "uid 1000", "setcap"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
	if got := root.Explain("dump", 1, eperm); got != eperm {
		t.Errorf("root's error changed: %v", got)
	}
	enoent := fmt.Errorf("open: %w", unix.ENOENT)
	if got := cr.Explain("restore", 0, enoent); got != enoent {
		t.Errorf("ENOENT changed: %v", got)
	}
	if got := cr.Explain("restore", 0, nil); got != nil {
		t.Errorf("nil became %v", got)
	}
}
