package regs

import (
	"encoding/binary"
	"fmt"
	"sync"

	x86 "github.com/checkpoint-restore/go-criu/v8/crit/images/core-x86"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/linux"
)

func cpuid(leaf, sub uint32) (a, b, c, d uint32)

// XSAVE components stored in the image (Intel SDM vol. 1, 13.1).
const (
	compAVX      = 2
	compBndregs  = 3
	compBndcsr   = 4
	compOpmask   = 5
	compZmmHi256 = 6
	compHi16Zmm  = 7
	compPKRU     = 9
)

type component struct{ off, size int }

// layout returns where each XSAVE component lives in the standard format
// on this CPU: CPUID leaf 0xD sub-leaf i gives size (EAX) and offset (EBX).
var layout = sync.OnceValue(func() map[int]component {
	m := map[int]component{}
	for i := compAVX; i <= compPKRU; i++ {
		a, b, _, _ := cpuid(0xd, uint32(i))
		if a != 0 {
			m[i] = component{off: int(b), size: int(a)}
		}
	}
	return m
})

const (
	legacySize    = 512
	xstateBVOff   = 512
	swReservedOff = 464 // fxsave bytes the kernel uses for its own xsave magic
)

// ToImage builds the image form of a thread's registers.
func ToImage(r *unix.PtraceRegs, xstate []byte) (*x86.ThreadInfoX86, error) {
	if len(xstate) < legacySize+64 {
		return nil, fmt.Errorf("xstate of %d bytes is shorter than the xsave header", len(xstate))
	}
	le := binary.LittleEndian
	fp := &x86.UserX86FpregsEntry{
		Cwd:       proto.Uint32(uint32(le.Uint16(xstate[0:]))),
		Swd:       proto.Uint32(uint32(le.Uint16(xstate[2:]))),
		Twd:       proto.Uint32(uint32(le.Uint16(xstate[4:]))),
		Fop:       proto.Uint32(uint32(le.Uint16(xstate[6:]))),
		Rip:       proto.Uint64(le.Uint64(xstate[8:])),
		Rdp:       proto.Uint64(le.Uint64(xstate[16:])),
		Mxcsr:     proto.Uint32(le.Uint32(xstate[24:])),
		MxcsrMask: proto.Uint32(le.Uint32(xstate[28:])),
		StSpace:   words32(xstate[32:160]),
		XmmSpace:  words32(xstate[160:416]),
		Padding:   words32(xstate[416:512]),
	}
	xs := &x86.UserX86XsaveEntry{XstateBv: proto.Uint64(le.Uint64(xstate[xstateBVOff:]))}
	comp := func(i int) []byte {
		c, ok := layout()[i]
		if !ok || c.off+c.size > len(xstate) {
			return nil
		}
		return xstate[c.off : c.off+c.size]
	}
	xs.YmmhSpace = words32(comp(compAVX))
	xs.BndregState = words64(comp(compBndregs))
	xs.BndcsrState = words64(comp(compBndcsr))
	xs.OpmaskReg = words64(comp(compOpmask))
	xs.ZmmUpper = words64(comp(compZmmHi256))
	xs.Hi16Zmm = words64(comp(compHi16Zmm))
	xs.Pkru = words32(comp(compPKRU))
	fp.Xsave = xs
	return &x86.ThreadInfoX86{
		ClearTidAddr: proto.Uint64(0),
		Gpregs:       gpToImage(r),
		Fpregs:       fp,
	}, nil
}

// FromImage returns the registers and the XSAVE area to set. tmpl is the
// target thread's current XSAVE area: it fixes the size and the kernel's
// own software-reserved bytes for this CPU.
func FromImage(ti *x86.ThreadInfoX86, tmpl []byte) (unix.PtraceRegs, []byte, error) {
	if ti.GetGpregs() == nil || ti.GetFpregs() == nil {
		return unix.PtraceRegs{}, nil, fmt.Errorf("thread_info without gpregs or fpregs")
	}
	if m := ti.GetGpregs().GetMode(); m != x86.UserX86RegsMode_NATIVE {
		return unix.PtraceRegs{}, nil, fmt.Errorf("32-bit (compat) tasks are %w", linux.ErrNotSupported)
	}
	r := gpFromImage(ti.GetGpregs())
	buf := make([]byte, len(tmpl))
	fp := ti.GetFpregs()
	if err := put32(buf[416:legacySize], fp.GetPadding()); err != nil {
		return r, nil, fmt.Errorf("fxsave padding: %w", err)
	}
	// The software-reserved bytes describe this kernel's xsave format to
	// itself: take them from the target, not from the image.
	copy(buf[swReservedOff:legacySize], tmpl[swReservedOff:legacySize])
	le := binary.LittleEndian
	le.PutUint16(buf[0:], uint16(fp.GetCwd()))
	le.PutUint16(buf[2:], uint16(fp.GetSwd()))
	le.PutUint16(buf[4:], uint16(fp.GetTwd()))
	le.PutUint16(buf[6:], uint16(fp.GetFop()))
	le.PutUint64(buf[8:], fp.GetRip())
	le.PutUint64(buf[16:], fp.GetRdp())
	le.PutUint32(buf[24:], fp.GetMxcsr())
	le.PutUint32(buf[28:], fp.GetMxcsrMask())
	if err := put32(buf[32:160], fp.GetStSpace()); err != nil {
		return r, nil, fmt.Errorf("st_space: %w", err)
	}
	if err := put32(buf[160:416], fp.GetXmmSpace()); err != nil {
		return r, nil, fmt.Errorf("xmm_space: %w", err)
	}
	xs := fp.GetXsave()
	if xs == nil {
		// fxsave-only image: x87 and SSE state.
		le.PutUint64(buf[xstateBVOff:], 3)
		return r, buf, nil
	}
	bv := xs.GetXstateBv()
	supported := le.Uint64(tmpl[swReservedOff+8:]) // xfeatures from the kernel's fx_sw_reserved
	if supported != 0 && bv&^supported != 0 {
		return r, nil, fmt.Errorf("xstate features %#x not supported by this CPU (has %#x)", bv, supported)
	}
	le.PutUint64(buf[xstateBVOff:], bv)
	comps := []struct {
		i   int
		w32 []uint32
		w64 []uint64
	}{
		{i: compAVX, w32: xs.GetYmmhSpace()},
		{i: compBndregs, w64: xs.GetBndregState()},
		{i: compBndcsr, w64: xs.GetBndcsrState()},
		{i: compOpmask, w64: xs.GetOpmaskReg()},
		{i: compZmmHi256, w64: xs.GetZmmUpper()},
		{i: compHi16Zmm, w64: xs.GetHi16Zmm()},
		{i: compPKRU, w32: xs.GetPkru()},
	}
	for _, c := range comps {
		if len(c.w32) == 0 && len(c.w64) == 0 {
			continue
		}
		l, ok := layout()[c.i]
		if !ok || l.off+l.size > len(buf) {
			return r, nil, fmt.Errorf("xstate component %d is in the image but not on this CPU", c.i)
		}
		dst := buf[l.off : l.off+l.size]
		var err error
		if c.w32 != nil {
			err = put32(dst, c.w32)
		} else {
			err = put64(dst, c.w64)
		}
		if err != nil {
			return r, nil, fmt.Errorf("xstate component %d: %w", c.i, err)
		}
	}
	return r, buf, nil
}

func words32(b []byte) []uint32 {
	if len(b) == 0 {
		return nil
	}
	w := make([]uint32, len(b)/4)
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return w
}

func words64(b []byte) []uint64 {
	if len(b) == 0 {
		return nil
	}
	w := make([]uint64, len(b)/8)
	for i := range w {
		w[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return w
}

func put32(dst []byte, w []uint32) error {
	if len(w)*4 > len(dst) {
		return fmt.Errorf("%d words do not fit in %d bytes", len(w), len(dst))
	}
	for i, v := range w {
		binary.LittleEndian.PutUint32(dst[4*i:], v)
	}
	return nil
}

func put64(dst []byte, w []uint64) error {
	if len(w)*8 > len(dst) {
		return fmt.Errorf("%d words do not fit in %d bytes", len(w), len(dst))
	}
	for i, v := range w {
		binary.LittleEndian.PutUint64(dst[8*i:], v)
	}
	return nil
}

func gpToImage(r *unix.PtraceRegs) *x86.UserX86RegsEntry {
	u := proto.Uint64
	return &x86.UserX86RegsEntry{
		R15: u(r.R15), R14: u(r.R14), R13: u(r.R13), R12: u(r.R12),
		Bp: u(r.Rbp), Bx: u(r.Rbx), R11: u(r.R11), R10: u(r.R10),
		R9: u(r.R9), R8: u(r.R8), Ax: u(r.Rax), Cx: u(r.Rcx),
		Dx: u(r.Rdx), Si: u(r.Rsi), Di: u(r.Rdi), OrigAx: u(r.Orig_rax),
		Ip: u(r.Rip), Cs: u(r.Cs), Flags: u(r.Eflags), Sp: u(r.Rsp),
		Ss: u(r.Ss), FsBase: u(r.Fs_base), GsBase: u(r.Gs_base),
		Ds: u(r.Ds), Es: u(r.Es), Fs: u(r.Fs), Gs: u(r.Gs),
		Mode: x86.UserX86RegsMode_NATIVE.Enum(),
	}
}

func gpFromImage(g *x86.UserX86RegsEntry) unix.PtraceRegs {
	return unix.PtraceRegs{
		R15: g.GetR15(), R14: g.GetR14(), R13: g.GetR13(), R12: g.GetR12(),
		Rbp: g.GetBp(), Rbx: g.GetBx(), R11: g.GetR11(), R10: g.GetR10(),
		R9: g.GetR9(), R8: g.GetR8(), Rax: g.GetAx(), Rcx: g.GetCx(),
		Rdx: g.GetDx(), Rsi: g.GetSi(), Rdi: g.GetDi(), Orig_rax: g.GetOrigAx(),
		Rip: g.GetIp(), Cs: g.GetCs(), Eflags: g.GetFlags(), Rsp: g.GetSp(),
		Ss: g.GetSs(), Fs_base: g.GetFsBase(), Gs_base: g.GetGsBase(),
		Ds: g.GetDs(), Es: g.GetEs(), Fs: g.GetFs(), Gs: g.GetGs(),
	}
}

// Kernel return values that ask for a syscall restart
// (include/linux/errno.h).
const (
	errRestartSys        = 512
	errRestartNoIntr     = 513
	errRestartNoHand     = 514
	errRestartRestartBlk = 516
)

// FixRestart rewrites the registers of a thread stopped inside an
// interrupted system call so that they are valid in a new process: the
// call is re-executed from the start (rip back over the 2-byte syscall
// instruction, rax = the call number). orig_rax is set to -1 so that the
// kernel's syscall-exit path does not apply restart logic to the new
// registers.
//
// An interrupted sleep (-ERESTART_RESTARTBLOCK) cannot use restart_syscall
// as in the same process: the kernel's restart block, which holds the
// deadline, does not survive into a new one. It is re-executed instead,
// and so that it still ends when it should, a relative sleep that passed
// a "remaining" buffer sleeps for what the kernel wrote there when the
// stop interrupted it: the request pointer is pointed at that buffer
// (memory is dumped after this, with the remaining time in it). A
// relative sleep without such a buffer restarts its full interval, as in
// criu; an absolute one (TIMER_ABSTIME) keeps its deadline.
func FixRestart(r *unix.PtraceRegs) {
	if int64(r.Orig_rax) >= 0 {
		switch -int64(r.Rax) {
		case errRestartRestartBlk:
			switch {
			case r.Orig_rax == unix.SYS_NANOSLEEP && r.Rsi != 0:
				r.Rdi = r.Rsi
			case r.Orig_rax == unix.SYS_CLOCK_NANOSLEEP && r.Rsi&unix.TIMER_ABSTIME == 0 && r.R10 != 0:
				r.Rdx = r.R10
			}
			fallthrough
		case errRestartSys, errRestartNoIntr, errRestartNoHand:
			r.Rax = r.Orig_rax
			r.Rip -= 2
		}
	}
	r.Orig_rax = ^uint64(0)
}
