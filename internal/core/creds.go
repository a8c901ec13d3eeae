package core

import (
	"encoding/binary"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

func dumpCreds(t *ptrace.Task, s *ptrace.Scratch, st *proc.Status) (*creds.CredsEntry, error) {
	sb, err := t.Call("prctl(PR_GET_SECUREBITS)", unix.SYS_PRCTL, unix.PR_GET_SECUREBITS)
	if err != nil {
		return nil, err
	}
	caps := func(v uint64) []uint32 { return []uint32{uint32(v), uint32(v >> 32)} }
	return &creds.CredsEntry{
		Uid: proto.Uint32(st.Uid[0]), Euid: proto.Uint32(st.Uid[1]), Suid: proto.Uint32(st.Uid[2]), Fsuid: proto.Uint32(st.Uid[3]),
		Gid: proto.Uint32(st.Gid[0]), Egid: proto.Uint32(st.Gid[1]), Sgid: proto.Uint32(st.Gid[2]), Fsgid: proto.Uint32(st.Gid[3]),
		CapInh: caps(st.CapInh), CapPrm: caps(st.CapPrm), CapEff: caps(st.CapEff), CapBnd: caps(st.CapBnd), CapAmb: caps(st.CapAmb),
		Secbits:    proto.Uint32(uint32(sb)),
		Groups:     st.Groups,
		NoNewPrivs: proto.Uint32(uint32(st.NoNewPrivs)),
	}, nil
}

// restoreCreds switches the task to the dumped user and groups. It runs
// last among the injected steps: after it, the task may no longer be
// allowed what stasis still needs to do inside it.
func restoreCreds(t *ptrace.Task, s *ptrace.Scratch, th *criucore.ThreadCoreEntry) error {
	c := th.GetCreds()
	if c == nil {
		return nil
	}
	if len(c.GetGroups()) > 0 || c.GetGid() != 0 {
		b := make([]byte, 4*len(c.GetGroups())+4)
		for i, g := range c.GetGroups() {
			binary.LittleEndian.PutUint32(b[4*i:], g)
		}
		a, err := s.Put(0, b)
		if err != nil {
			return err
		}
		if _, err := t.Call("setgroups", unix.SYS_SETGROUPS, uint64(len(c.GetGroups())), a); err != nil {
			return err
		}
	}
	if _, err := t.Call("setresgid", unix.SYS_SETRESGID, uint64(c.GetGid()), uint64(c.GetEgid()), uint64(c.GetSgid())); err != nil {
		return err
	}
	if _, err := t.Call("setfsgid", unix.SYS_SETFSGID, uint64(c.GetFsgid())); err != nil {
		return err
	}
	if _, err := t.Call("setresuid", unix.SYS_SETRESUID, uint64(c.GetUid()), uint64(c.GetEuid()), uint64(c.GetSuid())); err != nil {
		return err
	}
	if _, err := t.Call("setfsuid", unix.SYS_SETFSUID, uint64(c.GetFsuid())); err != nil {
		return err
	}
	if c.GetNoNewPrivs() != 0 {
		if _, err := t.Call("prctl(PR_SET_NO_NEW_PRIVS)", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return err
		}
	}
	return nil
}

