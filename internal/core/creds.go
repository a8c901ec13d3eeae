package core

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/remote"
)

// Credential ABI missing from x/sys/unix.
const (
	secbitNoSetuidFixup = 1 << 2 // SECBIT_NO_SETUID_FIXUP, include/uapi/linux/securebits.h
	capU32s             = 2      // _LINUX_CAPABILITY_U32S_3, include/uapi/linux/capability.h
	noID                = 0xffffffff
)

func dumpCreds(t *ptrace.Task, s *ptrace.Scratch, st *proc.Status) (*creds.CredsEntry, error) {
	sb, err := t.Call("prctl(PR_GET_SECUREBITS)", unix.SYS_PRCTL, unix.PR_GET_SECUREBITS)
	if err != nil {
		return nil, err
	}
	return userCreds(t.Tid, st, uint32(sb))
}

// userCreds is the creds_entry of thread tid from its /proc status and
// securebits (which only prctl shows).
func userCreds(tid int, st *proc.Status, sb uint32) (*creds.CredsEntry, error) {
	st, err := userView(tid, st)
	if err != nil {
		return nil, err
	}
	caps := func(v uint64) []uint32 { return []uint32{uint32(v), uint32(v >> 32)} }
	return &creds.CredsEntry{
		Uid: proto.Uint32(st.Uid[0]), Euid: proto.Uint32(st.Uid[1]), Suid: proto.Uint32(st.Uid[2]), Fsuid: proto.Uint32(st.Uid[3]),
		Gid: proto.Uint32(st.Gid[0]), Egid: proto.Uint32(st.Gid[1]), Sgid: proto.Uint32(st.Gid[2]), Fsgid: proto.Uint32(st.Gid[3]),
		CapInh: caps(st.CapInh), CapPrm: caps(st.CapPrm), CapEff: caps(st.CapEff), CapBnd: caps(st.CapBnd), CapAmb: caps(st.CapAmb),
		Secbits:    proto.Uint32(sb),
		Groups:     st.Groups,
		NoNewPrivs: proto.Uint32(uint32(st.NoNewPrivs)),
	}, nil
}

// credState is what a thread holds now, so that restoreCreds only asks
// for the changes (each needs a capability the thread may already lack,
// e.g. when restoring into an unprivileged user namespace).
type credState struct {
	groups              []uint32
	uid, gid            [4]uint32 // real, effective, saved, fs
	eff, prm, inh, amb  uint64
	bnd                 uint64
	secbits             uint64
	noNewPrivs          bool
	pdeathSig, dumpable uint64
	lastCap             int
}

// restoreCreds gives one thread the credentials of its creds_entry. It
// runs last among the injected steps (but see RestoreSeccomp): after it,
// the thread may no longer be allowed what stasis still needs to do
// inside it.
//
// Order (criu's restore_creds, plus ambient caps):
//  1. groups, while the thread still has CAP_SETGID;
//  2. uids/gids with SECBIT_NO_SETUID_FIXUP set, so that leaving uid 0
//     clears neither the effective, permitted nor ambient set
//     (SECBIT_KEEP_CAPS alone keeps only the permitted set);
//  3. inheritable set, then ambient set: raising needs the cap in both
//     permitted and inheritable, and must come before the dumped
//     securebits, which may hold SECBIT_NO_CAP_AMBIENT_RAISE;
//  4. bounding set and securebits, both needing CAP_SETPCAP, which the
//     final capset may drop;
//  5. effective/permitted/inheritable as dumped; lowering the permitted
//     set keeps the ambient caps that are still permitted+inheritable;
//  6. no_new_privs, then the pdeath signal and dumpable flag that a
//     credential change resets.
func restoreCreds(t remote.Task, th *criucore.ThreadCoreEntry) error {
	c := th.GetCreds()
	if c == nil {
		return nil
	}
	cur, err := readCredState(t)
	if err != nil {
		return err
	}
	steps := []struct {
		name string
		fn   func(remote.Task, *creds.CredsEntry, *credState) error
	}{
		{"groups", restoreGroups},
		{"ids", restoreIDs},
		{"ambient capabilities", restoreAmbient},
		{"bounding set", restoreBounding},
		{"securebits", restoreSecurebits},
		{"capabilities", restoreCaps},
		{"no_new_privs", restoreNoNewPrivs},
		{"reset by the credential change", restoreCredSideEffects},
	}
	for _, st := range steps {
		if err := st.fn(t, c, cur); err != nil {
			return fmt.Errorf("credentials of tid %d: %s: %w", t.HostPid(), st.name, err)
		}
	}
	return nil
}

func readCredState(t remote.Task) (*credState, error) {
	st, err := proc.ReadStatus(t.HostPid())
	if err == nil {
		st, err = userView(t.HostPid(), st)
	}
	if err != nil {
		return nil, err
	}
	sb, err := t.Call("prctl(PR_GET_SECUREBITS)", unix.SYS_PRCTL, unix.PR_GET_SECUREBITS)
	if err != nil {
		return nil, err
	}
	dumpable, err := t.Call("prctl(PR_GET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_GET_DUMPABLE)
	if err != nil {
		return nil, err
	}
	a, err := t.Put(0, make([]byte, 4))
	if err != nil {
		return nil, err
	}
	if _, err := t.Call("prctl(PR_GET_PDEATHSIG)", unix.SYS_PRCTL, unix.PR_GET_PDEATHSIG, a); err != nil {
		return nil, err
	}
	b, err := t.Get(0, 4)
	if err != nil {
		return nil, err
	}
	last, err := capLastCap()
	if err != nil {
		return nil, err
	}
	return &credState{
		groups: st.Groups, uid: st.Uid, gid: st.Gid,
		eff: st.CapEff, prm: st.CapPrm, inh: st.CapInh, amb: st.CapAmb, bnd: st.CapBnd,
		secbits: sb, noNewPrivs: st.NoNewPrivs != 0,
		pdeathSig: uint64(binary.LittleEndian.Uint32(b)), dumpable: dumpable,
		lastCap: last,
	}, nil
}

// capLastCap is the highest capability this kernel knows; the restored
// thread runs on the same kernel as stasis.
func capLastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// capWords joins the u32 words of a creds_entry capability set.
func capWords(w []uint32) uint64 {
	var v uint64
	for i := 0; i < len(w) && i < capU32s; i++ {
		v |= uint64(w[i]) << (32 * i)
	}
	return v
}

func restoreGroups(t remote.Task, c *creds.CredsEntry, cur *credState) error {
	want := c.GetGroups()
	if slices.Equal(want, cur.groups) {
		return nil
	}
	var addr uint64
	if len(want) > 0 {
		b := make([]byte, 4*len(want))
		for i, g := range want {
			binary.LittleEndian.PutUint32(b[4*i:], g)
		}
		var err error
		if addr, err = t.Put(0, b); err != nil {
			return err
		}
	}
	_, err := t.Call("setgroups", unix.SYS_SETGROUPS, uint64(len(want)), addr)
	if b, rerr := os.ReadFile(fmt.Sprintf("/proc/%d/setgroups", t.HostPid())); err != nil && rerr == nil && strings.TrimSpace(string(b)) == "deny" {
		// The namespace's setgroups "deny" is kept (criu turns it into
		// "allow"): the groups must come with the task.
		return fmt.Errorf("groups %v (it has %v): its user namespace denies setgroups: %w", want, cur.groups, err)
	}
	return err
}

func restoreIDs(t remote.Task, c *creds.CredsEntry, cur *credState) error {
	uid := [4]uint32{c.GetUid(), c.GetEuid(), c.GetSuid(), c.GetFsuid()}
	gid := [4]uint32{c.GetGid(), c.GetEgid(), c.GetSgid(), c.GetFsgid()}
	if uid == cur.uid && gid == cur.gid {
		return nil
	}
	if cur.secbits&secbitNoSetuidFixup == 0 {
		if err := setSecurebits(t, cur.secbits|secbitNoSetuidFixup); err != nil {
			return err
		}
		cur.secbits |= secbitNoSetuidFixup
	}
	if _, err := t.Call("setresgid", unix.SYS_SETRESGID, uint64(gid[0]), uint64(gid[1]), uint64(gid[2])); err != nil {
		return err
	}
	if err := setFSID(t, "setfsgid", unix.SYS_SETFSGID, gid[3]); err != nil {
		return err
	}
	if _, err := t.Call("setresuid", unix.SYS_SETRESUID, uint64(uid[0]), uint64(uid[1]), uint64(uid[2])); err != nil {
		return err
	}
	if err := setFSID(t, "setfsuid", unix.SYS_SETFSUID, uid[3]); err != nil {
		return err
	}
	cur.uid, cur.gid = uid, gid
	return nil
}

// setFSID sets the fs uid or gid. The call never fails, it returns the
// old value whatever happened; asking again with an invalid id tells
// whether it took.
func setFSID(t remote.Task, name string, nr uintptr, id uint32) error {
	if _, err := t.Call(name, nr, uint64(id)); err != nil {
		return err
	}
	got, err := t.Call(name, nr, noID)
	if err != nil {
		return err
	}
	if uint32(got) != id {
		return fmt.Errorf("%s(%d) in tid %d: still %d", name, id, t.HostPid(), uint32(got))
	}
	return nil
}

func setSecurebits(t remote.Task, v uint64) error {
	_, err := t.Call(fmt.Sprintf("prctl(PR_SET_SECUREBITS, %#x)", v), unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, v)
	return err
}

// restoreAmbient sets the ambient set. Raising a cap needs it in the
// permitted and inheritable sets: the permitted set is still the one the
// thread had (a superset of the dumped one for a root puppet), the
// inheritable one is set to the dumped value first.
func restoreAmbient(t remote.Task, c *creds.CredsEntry, cur *credState) error {
	amb, inh := capWords(c.GetCapAmb()), capWords(c.GetCapInh())
	if amb == cur.amb {
		return nil
	}
	if amb != 0 && inh != cur.inh {
		if err := capset(t, cur.eff, cur.prm, inh); err != nil {
			return err
		}
		cur.inh = inh
	}
	if _, err := t.Call("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return err
	}
	for capNr := 0; capNr <= cur.lastCap; capNr++ {
		if amb&(1<<capNr) == 0 {
			continue
		}
		if _, err := t.Call(fmt.Sprintf("prctl(PR_CAP_AMBIENT_RAISE, %d)", capNr), unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uint64(capNr), 0, 0); err != nil {
			return err
		}
	}
	cur.amb = amb
	return nil
}

// restoreBounding drops what the dumped bounding set lacks. Caps the
// dumped set has and this thread's lacks cannot be added back; a thread
// that had them in its permitted set fails later, in capset.
func restoreBounding(t remote.Task, c *creds.CredsEntry, cur *credState) error {
	drop := cur.bnd &^ capWords(c.GetCapBnd())
	for capNr := 0; capNr <= cur.lastCap; capNr++ {
		if drop&(1<<capNr) == 0 {
			continue
		}
		if _, err := t.Call(fmt.Sprintf("prctl(PR_CAPBSET_DROP, %d)", capNr), unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uint64(capNr)); err != nil {
			return err
		}
	}
	cur.bnd &^= drop
	return nil
}

// restoreSecurebits sets the dumped securebits, which also ends the
// SECBIT_NO_SETUID_FIXUP of restoreIDs unless the thread had it.
func restoreSecurebits(t remote.Task, c *creds.CredsEntry, cur *credState) error {
	want := uint64(c.GetSecbits())
	if want == cur.secbits {
		return nil
	}
	if err := setSecurebits(t, want); err != nil {
		return err
	}
	cur.secbits = want
	return nil
}

func restoreCaps(t remote.Task, c *creds.CredsEntry, cur *credState) error {
	eff, prm, inh := capWords(c.GetCapEff()), capWords(c.GetCapPrm()), capWords(c.GetCapInh())
	if eff == cur.eff && prm == cur.prm && inh == cur.inh {
		return nil
	}
	if err := capset(t, eff, prm, inh); err != nil {
		return err
	}
	cur.eff, cur.prm, cur.inh = eff, prm, inh
	return nil
}

// capset injects capset(2) with a version 3 header: two 32-bit words per
// set, {effective, permitted, inheritable} for caps 0-31, then 32-63.
func capset(t remote.Task, eff, prm, inh uint64) error {
	b := make([]byte, 8+12*capU32s)
	le := binary.LittleEndian
	le.PutUint32(b[0:], unix.LINUX_CAPABILITY_VERSION_3)
	le.PutUint32(b[4:], 0) // pid 0: the calling thread
	for i := 0; i < capU32s; i++ {
		le.PutUint32(b[8+12*i:], uint32(eff>>(32*i)))
		le.PutUint32(b[12+12*i:], uint32(prm>>(32*i)))
		le.PutUint32(b[16+12*i:], uint32(inh>>(32*i)))
	}
	hdr, err := t.Put(0, b)
	if err != nil {
		return err
	}
	_, err = t.Call(fmt.Sprintf("capset(eff %#x, prm %#x, inh %#x)", eff, prm, inh), unix.SYS_CAPSET, hdr, hdr+8)
	return err
}

func restoreNoNewPrivs(t remote.Task, c *creds.CredsEntry, cur *credState) error {
	want := c.GetNoNewPrivs() != 0
	switch {
	case want == cur.noNewPrivs:
		return nil
	case !want:
		return errors.New("the thread has no_new_privs set, which cannot be cleared")
	}
	if _, err := t.Call("prctl(PR_SET_NO_NEW_PRIVS)", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	cur.noNewPrivs = true
	return nil
}

// restoreCredSideEffects puts back what commit_creds resets when the
// euid, egid, fsuid or fsgid change or the permitted set shrinks: the
// parent-death signal (to 0) and the dumpable flag (to
// fs.suid_dumpable). Both were already restored when creds come last.
func restoreCredSideEffects(t remote.Task, c *creds.CredsEntry, cur *credState) error {
	a, err := t.Put(0, make([]byte, 4))
	if err != nil {
		return err
	}
	if _, err := t.Call("prctl(PR_GET_PDEATHSIG)", unix.SYS_PRCTL, unix.PR_GET_PDEATHSIG, a); err != nil {
		return err
	}
	b, err := t.Get(0, 4)
	if err != nil {
		return err
	}
	if sig := uint64(binary.LittleEndian.Uint32(b)); sig != cur.pdeathSig {
		if _, err := t.Call("prctl(PR_SET_PDEATHSIG)", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, cur.pdeathSig); err != nil {
			return err
		}
	}
	d, err := t.Call("prctl(PR_GET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_GET_DUMPABLE)
	if err != nil {
		return err
	}
	// Only 0 and 1 can be set; 2 (suid_dumpable) is the kernel's own.
	if d != cur.dumpable && cur.dumpable <= 1 {
		_, err = t.Call("prctl(PR_SET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, cur.dumpable)
	}
	return err
}

// CredCache holds the credentials the threads of one restored process
// start with: they are all clones of its leader made before any credential
// changed, so they are read once, from the leader.
type CredCache struct{ cur *credState }

// RestoreCredsCached is RestoreCreds for the threads of one process, in
// order, leader first: a thread whose image credentials are the ones it
// already has (the common case: nothing dropped) costs no injected call.
func RestoreCredsCached(t remote.Task, ce *criucore.CoreEntry, cache *CredCache) error {
	c := ce.GetThreadCore().GetCreds()
	if c == nil {
		return nil
	}
	if cache.cur == nil {
		cur, err := readCredState(t)
		if err != nil {
			return fmt.Errorf("credentials of tid %d: %w", t.HostPid(), err)
		}
		cache.cur = cur
	}
	if sameCreds(c, cache.cur) {
		return nil
	}
	return RestoreCreds(t, ce)
}

func sameCreds(c *creds.CredsEntry, cur *credState) bool {
	caps := func(w []uint32) uint64 {
		var v uint64
		for i, x := range w {
			if i < 2 {
				v |= uint64(x) << (32 * i)
			}
		}
		return v
	}
	return slices.Equal(c.GetGroups(), cur.groups) &&
		[4]uint32{c.GetUid(), c.GetEuid(), c.GetSuid(), c.GetFsuid()} == cur.uid &&
		[4]uint32{c.GetGid(), c.GetEgid(), c.GetSgid(), c.GetFsgid()} == cur.gid &&
		caps(c.GetCapEff()) == cur.eff && caps(c.GetCapPrm()) == cur.prm &&
		caps(c.GetCapInh()) == cur.inh && caps(c.GetCapAmb()) == cur.amb &&
		caps(c.GetCapBnd()) == cur.bnd && uint64(c.GetSecbits()) == cur.secbits &&
		(c.GetNoNewPrivs() != 0) == cur.noNewPrivs
}
