package regs

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFixRestart(t *testing.T) {
	for _, tc := range []struct {
		name             string
		in               unix.PtraceRegs
		wantRax, wantRip uint64
	}{
		{"read ERESTARTSYS", unix.PtraceRegs{Orig_rax: 0, Rax: neg(512), Rip: 0x1002}, 0, 0x1000},
		{"nanosleep ERESTART_RESTARTBLOCK", unix.PtraceRegs{Orig_rax: 230, Rax: neg(516), Rip: 0x2002}, 230, 0x2000},
		{"nanosleep without rem", unix.PtraceRegs{Orig_rax: 35, Rax: neg(516), Rip: 0x2002, Rdi: 0x10}, 35, 0x2000},
		{"ERESTARTNOHAND", unix.PtraceRegs{Orig_rax: 7, Rax: neg(514), Rip: 0x3002}, 7, 0x3000},
		{"finished call", unix.PtraceRegs{Orig_rax: 1, Rax: 5, Rip: 0x4002}, 5, 0x4002},
		{"user code", unix.PtraceRegs{Orig_rax: ^uint64(0), Rax: neg(512), Rip: 0x5000}, neg(512), 0x5000},
	} {
		r := tc.in
		FixRestart(&r)
		if r.Rax != tc.wantRax || r.Rip != tc.wantRip || r.Orig_rax != ^uint64(0) {
			t.Errorf("%s: rax %#x rip %#x orig %#x, want rax %#x rip %#x orig -1", tc.name, r.Rax, r.Rip, r.Orig_rax, tc.wantRax, tc.wantRip)
		}
	}
}

func TestFixRestartSleepRemaining(t *testing.T) {
	r := unix.PtraceRegs{Orig_rax: 230, Rax: neg(516), Rip: 0x2002, Rdi: 1, Rsi: 0, Rdx: 0x100, R10: 0x200}
	FixRestart(&r)
	if r.Rdx != 0x200 {
		t.Errorf("relative clock_nanosleep: req %#x, want the rem buffer 0x200", r.Rdx)
	}
	r = unix.PtraceRegs{Orig_rax: 230, Rax: neg(516), Rip: 0x2002, Rdi: 1, Rsi: unix.TIMER_ABSTIME, Rdx: 0x100, R10: 0x200}
	FixRestart(&r)
	if r.Rdx != 0x100 {
		t.Errorf("absolute clock_nanosleep: req %#x, want it unchanged", r.Rdx)
	}
	r = unix.PtraceRegs{Orig_rax: 35, Rax: neg(516), Rip: 0x2002, Rdi: 0x100, Rsi: 0x200}
	FixRestart(&r)
	if r.Rdi != 0x200 {
		t.Errorf("nanosleep: req %#x, want the rem buffer 0x200", r.Rdi)
	}
}

func neg(v int64) uint64 { return uint64(-v) }

// TestImageRoundTrip converts this CPU's real XSAVE layout to the image
// form and back and expects the same bytes.
func TestImageRoundTrip(t *testing.T) {
	size := 0
	for _, c := range layout() {
		size = max(size, c.off+c.size)
	}
	size = max(size, legacySize+64)
	xs := make([]byte, size)
	for i := range xs {
		xs[i] = byte(i * 7)
	}
	// Header: only features this CPU has, no compaction, zero reserved.
	for i := xstateBVOff; i < legacySize+64; i++ {
		xs[i] = 0
	}
	bv := uint64(3)
	for i := range layout() {
		bv |= 1 << i
	}
	putLE64(xs[xstateBVOff:], bv)
	putLE64(xs[swReservedOff+8:], bv)
	r := unix.PtraceRegs{Rip: 0x401000, Rsp: 0x7ffd0000, Rax: 42, Fs_base: 0x7f0000001000, Cs: 0x33, Ss: 0x2b}
	ti, err := ToImage(&r, xs)
	if err != nil {
		t.Fatal(err)
	}
	r2, xs2, err := FromImage(ti, xs)
	if err != nil {
		t.Fatal(err)
	}
	if r2 != r {
		t.Errorf("registers: got %+v, want %+v", r2, r)
	}
	if !bytes.Equal(xs2[:legacySize], xs[:legacySize]) {
		for i := 0; i < legacySize; i++ {
			if xs2[i] != xs[i] {
				t.Errorf("legacy area differs at %d: %#x != %#x", i, xs2[i], xs[i])
				break
			}
		}
	}
	for i, c := range layout() {
		if !bytes.Equal(xs2[c.off:c.off+c.size], xs[c.off:c.off+c.size]) {
			t.Errorf("component %d differs", i)
		}
	}
}

func putLE64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
}
