package mem

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/remote"
)

// The mm entry (mm-PID.img): the task's VMAs, the mm fields /proc shows
// (code, data, brk, stack, args, env), auxv, exe link, dumpable, THP and
// the AIO rings.

// FileTable is where the dump records the files a task maps (the dump's
// files.Table): each mapping names its file by a files.img id.
type FileTable interface {
	// AddLink records the file a magic link (/proc/PID/exe,
	// /proc/PID/map_files/...) points to, opened with flags.
	AddLink(src string, flags uint32) (uint32, error)
	// AddMemfdMapping records the memfd mapped at start-end of pid.
	AddMemfdMapping(pid int, start, end uint64, path string) (id, flags uint32, err error)
	// MappedSocket is the file id of the socket (sockfs dev and ino)
	// mapped at start-end of pid: one of the tree's fds must hold it.
	MappedSocket(pid int, start, end, dev, ino uint64) (uint32, error)
	// Refuse ends the dump with err, or in a preflight lists it and
	// returns nil to go on.
	Refuse(err error) error
}

// DumpMM returns the mm entry of the process whose leader is t, with
// areas its classified VMAs (Classify), whose file mappings it records
// in files. calls holds the answers of its injected calls (AskMM, which
// asks many processes at once); nil asks them here.
func DumpMM(t *ptrace.Task, pid int, st *proc.Stat, areas []*Area, files FileTable, calls *MMCalls) (*mm.MmEntry, error) {
	exeID, err := files.AddLink(fmt.Sprintf("/proc/%d/exe", pid), unix.O_RDONLY)
	if err != nil {
		if err := files.Refuse(fmt.Errorf("exe of pid %d: %w", pid, err)); err != nil {
			return nil, err
		}
	}
	auxv, err := proc.ReadAuxv(pid)
	if err != nil {
		return nil, err
	}
	// Without the AT_NULL pair, as criu saves it: criu refuses an auxv of
	// more than 44 words, and this kernel gives 22 pairs and AT_NULL. The
	// kernel ends the vector itself when PR_SET_MM_MAP sets it.
	if n := len(auxv); n >= 2 && auxv[n-2] == 0 {
		auxv = auxv[:n-2]
	}
	if calls == nil {
		cs, err := AskMM([]*ptrace.Task{t})
		if err != nil {
			return nil, err
		}
		calls = &cs[0]
	}
	m := &mm.MmEntry{
		MmStartCode:  proto.Uint64(st.StartCode),
		MmEndCode:    proto.Uint64(st.EndCode),
		MmStartData:  proto.Uint64(st.StartData),
		MmEndData:    proto.Uint64(st.EndData),
		MmStartStack: proto.Uint64(st.StartStack),
		MmStartBrk:   proto.Uint64(st.StartBrk),
		MmBrk:        proto.Uint64(calls.Brk),
		MmArgStart:   proto.Uint64(st.ArgStart),
		MmArgEnd:     proto.Uint64(st.ArgEnd),
		MmEnvStart:   proto.Uint64(st.EnvStart),
		MmEnvEnd:     proto.Uint64(st.EnvEnd),
		ExeFileId:    proto.Uint32(exeID),
		MmSavedAuxv:  auxv,
		Dumpable:     proto.Int32(int32(calls.Dumpable)),
	}
	if calls.ThpDisabled {
		m.ThpDisabled = proto.Bool(true)
	}
	for _, a := range areas {
		if a.Has(AreaAIORing) {
			ring, err := AioRing(pid, a)
			if err != nil {
				return nil, err
			}
			m.Aios = append(m.Aios, ring)
		}
		if err := addMappedFile(pid, a, files); err != nil {
			return nil, err
		}
		// criu writes [vvar] and [vvar_vclock] (Linux 6.13+) as one VMA
		// and refuses a vDSO whose data block is cut in two.
		if n := len(m.Vmas); n > 0 && a.Has(AreaVVAR) && m.Vmas[n-1].GetStatus()&AreaVVAR != 0 && m.Vmas[n-1].GetEnd() == a.Start() {
			m.Vmas[n-1].End = proto.Uint64(a.End())
			continue
		}
		m.Vmas = append(m.Vmas, a.E)
	}
	guards, err := GuardAreas(pid)
	if err != nil {
		return nil, err
	}
	m.Vmas = append(m.Vmas, guards...)
	return m, nil
}

// addMappedFile records the file a file mapping maps in files and names
// it in the VMA entry (its shmid is the file id, as in criu).
func addMappedFile(pid int, a *Area, files FileTable) error {
	if a.Has(AreaSocket) {
		id, err := files.MappedSocket(pid, a.Start(), a.End(), a.Dev, a.Ino)
		if err != nil {
			if err := files.Refuse(err); err != nil {
				return err
			}
		}
		// As criu writes it; the restore maps the socket itself,
		// whatever the flags.
		a.E.Shmid = proto.Uint64(uint64(id))
		a.E.Fdflags = proto.Uint32(unix.O_RDWR)
	} else if a.Memfd {
		id, flags, err := files.AddMemfdMapping(pid, a.Start(), a.End(), a.Path)
		if err != nil {
			if err := files.Refuse(err); err != nil {
				return err
			}
		}
		a.E.Shmid = proto.Uint64(uint64(id))
		a.E.Fdflags = proto.Uint32(flags)
	} else if a.Path != "" {
		flags := uint32(unix.O_RDONLY)
		// A shared mapping of a file opened for writing may be made
		// writable by mprotect later: its file is opened so again.
		if a.Has(FileShared) && (a.E.GetProt()&unix.PROT_WRITE != 0 || a.MayWrite) {
			flags = unix.O_RDWR
		}
		id, err := files.AddLink(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, a.Start(), a.End()), flags)
		if err != nil {
			if err := files.Refuse(fmt.Errorf("vma %#x-%#x of pid %d: %w", a.Start(), a.End(), pid, err)); err != nil {
				return err
			}
		}
		a.E.Shmid = proto.Uint64(uint64(id))
		a.E.Fdflags = proto.Uint32(flags)
	}
	return nil
}

// checkMM checks the mm entry read from file against itself and
// files.img (hasFile), and notes the size of each shared anonymous
// memory object its VMAs map in shm.
func checkMM(file string, m *mm.MmEntry, hasFile func(id uint32) bool, shm *ShmemObjects) error {
	if !hasFile(m.GetExeFileId()) {
		return bad(file, "exe file id %d is not in files.img", m.GetExeFileId())
	}
	var prevEnd uint64
	for i, v := range m.GetVmas() {
		if v.GetStart() >= v.GetEnd() || v.GetStart()%PageSize != 0 || v.GetEnd()%PageSize != 0 || v.GetStart() < prevEnd {
			return bad(file, "vma %d: bad range %#x-%#x", i, v.GetStart(), v.GetEnd())
		}
		prevEnd = v.GetEnd()
		if v.GetStatus()&(FilePrivate|FileShared|AreaSocket) != 0 && !hasFile(uint32(v.GetShmid())) {
			return bad(file, "vma %d maps file id %d, not in files.img", i, v.GetShmid())
		}
		if v.GetStatus()&AnonShared != 0 && v.GetStatus()&AreaSysVIPC == 0 {
			if v.GetPgoff()%PageSize != 0 || v.GetPgoff() > 1<<46 {
				return bad(file, "vma %d: shared memory offset %#x", i, v.GetPgoff())
			}
			shm.note(v.GetShmid(), int64(v.GetPgoff()+v.GetEnd()-v.GetStart()))
		}
	}
	if len(m.GetMmSavedAuxv())%2 != 0 || len(m.GetMmSavedAuxv()) > 2*64 {
		return bad(file, "auxv of %d words", len(m.GetMmSavedAuxv()))
	}
	return nil
}

// RestoreMM sets the mm fields /proc shows (code, data, brk, stack, args,
// env), auxv and the exe link in one PR_SET_MM_MAP, the only form allowed
// without CAP_SYS_RESOURCE.
func (r *Restorer) RestoreMM(t remote.Task, img *Image) error {
	m := img.MM
	auxv := make([]byte, 8*len(m.GetMmSavedAuxv()))
	for i, w := range m.GetMmSavedAuxv() {
		binary.LittleEndian.PutUint64(auxv[8*i:], w)
	}
	auxvAddr, err := t.Put(512, auxv)
	if err != nil {
		return err
	}
	// The exe link can change only while the old exe is not mapped; a
	// child that kept its parent's mappings keeps its exe link too (a
	// binary deleted while it ran is restored unlinked again).
	exe := ^uint64(0)
	cur, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", t.HostPid()))
	if strings.TrimSuffix(cur, " (deleted)") != r.FileName(m.GetExeFileId()) {
		fd, err := r.passFile(t, m.GetExeFileId())
		if err != nil {
			return fmt.Errorf("exe: %w", err)
		}
		exe = fd
	}
	b := make([]byte, linux.PrctlMMMapSize)
	le := binary.LittleEndian
	for i, v := range []uint64{
		m.GetMmStartCode(), m.GetMmEndCode(), m.GetMmStartData(), m.GetMmEndData(),
		m.GetMmStartBrk(), m.GetMmBrk(), m.GetMmStartStack(),
		m.GetMmArgStart(), m.GetMmArgEnd(), m.GetMmEnvStart(), m.GetMmEnvEnd(), auxvAddr,
	} {
		le.PutUint64(b[8*i:], v)
	}
	le.PutUint32(b[96:], uint32(len(auxv)))
	le.PutUint32(b[100:], uint32(exe))
	a, err := t.Put(0, b)
	if err != nil {
		return err
	}
	if _, err := t.Call("prctl(PR_SET_MM, PR_SET_MM_MAP)", unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP, a, linux.PrctlMMMapSize); err != nil {
		return err
	}
	if exe != ^uint64(0) {
		if _, err := t.Call("close", unix.SYS_CLOSE, exe); err != nil {
			return err
		}
	}
	if d := m.GetDumpable(); m.Dumpable != nil && d != 1 {
		if _, err := t.Call("prctl(PR_SET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, uint64(d)); err != nil {
			return err
		}
	}
	if m.GetThpDisabled() {
		if _, err := t.Call("prctl(PR_SET_THP_DISABLE)", unix.SYS_PRCTL, unix.PR_SET_THP_DISABLE, 1); err != nil {
			return err
		}
	}
	return nil
}
