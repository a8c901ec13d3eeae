package core

import (
	"encoding/binary"
	"slices"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"
)

const (
	capNetBindService = 10
	capNetRaw         = 13
	// securebits of the creds victim: NOROOT, NOROOT_LOCKED,
	// NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE.
	victimSecbits = 0x1 | 0x2 | 0x4 | 0x40
)

// TestCreds dumps a task that went from root to nobody keeping two
// capabilities (one ambient), with a smaller bounding set, custom
// securebits and no_new_privs, then gives a fresh root task those
// credentials and compares everything the kernel shows.
func TestCreds(t *testing.T) {
	src := startVictim(t, "creds")
	want, err := proc.ReadStatus(src.pid)
	if err != nil {
		t.Fatal(err)
	}
	checkCredsVictim(t, want)

	var ce *creds.CredsEntry
	withHeld(t, src.pid, func(h *held) error {
		ce, err = dumpCreds(h.t, h.s, want)
		return err
	})
	if ce.GetSecbits() != victimSecbits || ce.GetNoNewPrivs() != 1 {
		t.Errorf("dumped secbits %#x no_new_privs %d, want %#x 1", ce.GetSecbits(), ce.GetNoNewPrivs(), victimSecbits)
	}
	if got := capWords(ce.GetCapAmb()); got != 1<<capNetBindService {
		t.Errorf("dumped cap_amb %#x", got)
	}

	dst := startVictim(t, "target")
	var secbits, pdeath, dumpable uint64
	withHeld(t, dst.pid, func(h *held) error {
		// A pdeath signal set before the creds must survive them. SIGUSR1
		// has a handler: the thread that started the victim may be gone.
		if _, err := h.t.Call("prctl(PR_SET_PDEATHSIG)", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uint64(unix.SIGUSR1)); err != nil {
			return err
		}
		if err := restoreCreds(h.task(), &criucore.ThreadCoreEntry{Creds: ce}); err != nil {
			return err
		}
		if secbits, err = prctlGet(h, unix.PR_GET_SECUREBITS); err != nil {
			return err
		}
		if dumpable, err = prctlGet(h, unix.PR_GET_DUMPABLE); err != nil {
			return err
		}
		if _, err := h.t.Call("prctl(PR_GET_PDEATHSIG)", unix.SYS_PRCTL, unix.PR_GET_PDEATHSIG, h.s.Addr); err != nil {
			return err
		}
		b, err := h.s.Get(0, 4)
		pdeath = uint64(binary.LittleEndian.Uint32(b))
		return err
	})
	got, err := proc.ReadStatus(dst.pid)
	if err != nil {
		t.Fatal(err)
	}
	compareCreds(t, got, want)
	if secbits != victimSecbits {
		t.Errorf("securebits %#x, want %#x", secbits, victimSecbits)
	}
	if pdeath != uint64(unix.SIGUSR1) || dumpable != 1 {
		t.Errorf("after the credential change: pdeath signal %d dumpable %d, want %d 1", pdeath, dumpable, unix.SIGUSR1)
	}
	// The task runs on with its new credentials.
	if a := dst.ask(t, 'u'); a != "uname 0 0" {
		t.Errorf("restored task answers %q", a)
	}
}

// checkCredsVictim makes sure the victim really is in the state the test
// is about, so that a restore that does nothing cannot pass.
func checkCredsVictim(t *testing.T, st *proc.Status) {
	t.Helper()
	caps := uint64(1<<capNetBindService | 1<<capNetRaw)
	switch {
	case st.Uid != [4]uint32{65534, 65534, 1001, 1001} || st.Gid != [4]uint32{65534, 65534, 1000, 1000}:
		t.Fatalf("victim ids %v %v", st.Uid, st.Gid)
	case st.CapEff != caps || st.CapPrm != caps || st.CapInh != 1<<capNetBindService || st.CapAmb != 1<<capNetBindService:
		t.Fatalf("victim caps eff %#x prm %#x inh %#x amb %#x", st.CapEff, st.CapPrm, st.CapInh, st.CapAmb)
	case st.CapBnd&(1<<unix.CAP_SYS_MODULE|1<<unix.CAP_MKNOD) != 0:
		t.Fatalf("victim bounding set %#x", st.CapBnd)
	case st.NoNewPrivs != 1 || !slices.Equal(st.Groups, []uint32{100, 200, 65534}):
		t.Fatalf("victim no_new_privs %d groups %v", st.NoNewPrivs, st.Groups)
	}
}

func compareCreds(t *testing.T, got, want *proc.Status) {
	t.Helper()
	if got.Uid != want.Uid || got.Gid != want.Gid {
		t.Errorf("ids %v %v, want %v %v", got.Uid, got.Gid, want.Uid, want.Gid)
	}
	if !slices.Equal(got.Groups, want.Groups) {
		t.Errorf("groups %v, want %v", got.Groups, want.Groups)
	}
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"CapInh", got.CapInh, want.CapInh},
		{"CapPrm", got.CapPrm, want.CapPrm},
		{"CapEff", got.CapEff, want.CapEff},
		{"CapBnd", got.CapBnd, want.CapBnd},
		{"CapAmb", got.CapAmb, want.CapAmb},
	} {
		if c.got != c.want {
			t.Errorf("%s %#x, want %#x", c.name, c.got, c.want)
		}
	}
	if got.NoNewPrivs != want.NoNewPrivs {
		t.Errorf("NoNewPrivs %d, want %d", got.NoNewPrivs, want.NoNewPrivs)
	}
}

// TestCredsUnchanged restores a task's own credentials into itself: no
// call that needs a privilege is made, so this also works where stasis
// could not make them (unprivileged user namespaces).
func TestCredsUnchanged(t *testing.T) {
	v := startVictim(t, "target")
	before, err := proc.ReadStatus(v.pid)
	if err != nil {
		t.Fatal(err)
	}
	if before.CapEff == 0 {
		t.Fatal("target has no capabilities to drop")
	}
	withHeld(t, v.pid, func(h *held) error {
		// Without any capability, a restore that asked for a change
		// would fail.
		if err := capset(h.task(), 0, 0, 0); err != nil {
			return err
		}
		st, err := proc.ReadStatus(v.pid)
		if err != nil {
			return err
		}
		ce, err := dumpCreds(h.t, h.s, st)
		if err != nil {
			return err
		}
		return restoreCreds(h.task(), &criucore.ThreadCoreEntry{Creds: ce})
	})
}
