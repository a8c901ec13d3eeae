package cpuinfo

import (
	"fmt"
	"strings"
)

// insMask are the bits of each word that are instruction set extensions:
// code compiled or JIT-ed on the image's CPU may use them, so this CPU
// must have every one of them the image has (--cpu-cap=ins). Bits that
// say how the CPU behaves (errata, power, topology, virtualization) are
// left out: a program never executes them. Checked against criu 4.2's
// verdicts for every bit this machine lacks (testdata/criu-ins.txt).
var insMask = [NumWords]uint32{
	wordLeaf1EDX: bits(0, 4, 8, 11, 15, 19, 23, 24, 25, 26), // fpu tsc cx8 sep cmov clflush mmx fxsr sse sse2
	wordExt1EDX:  bits(11, 22, 27, 30, 31),                  // syscall mmxext rdtscp 3dnowext 3dnow
	wordLinux1:   bits(16, 20),                              // rep_good nopl
	// sse3 pclmulqdq monitor ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt
	// aes xsave osxsave avx f16c rdrand
	wordLeaf1ECX: bits(0, 1, 3, 9, 12, 13, 19, 20, 22, 23, 25, 26, 27, 28, 29, 30),
	wordExt1ECX:  bits(5, 6, 7, 8, 11, 16, 21), // abm sse4a misalignsse 3dnowprefetch xop fma4 tbm
	// fsgsbase bmi1 hle avx2 bmi2 erms rtm mpx avx512f avx512dq rdseed adx
	// avx512ifma clflushopt clwb avx512pf avx512er avx512cd sha avx512bw
	// avx512vl
	wordLeaf7EBX:  bits(0, 3, 4, 5, 8, 9, 11, 14, 16, 17, 18, 19, 21, 23, 24, 26, 27, 28, 29, 30, 31),
	wordLeafD1EAX: bits(0, 1, 2, 3), // xsaveopt xsavec xgetbv1 xsaves
	// avx512vbmi avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni
	// avx512_bitalg tme avx512_vpopcntdq rdpid movdiri movdir64b
	wordLeaf7ECX: bits(1, 6, 8, 9, 10, 11, 12, 13, 14, 22, 27, 28),
	wordExt8EBX:  bits(0),       // clzero
	wordLeaf7EDX: bits(2, 3, 8), // avx512_4vnniw avx512_4fmaps avx512_vp2intersect
}

func bits(n ...int) uint32 {
	var m uint32
	for _, b := range n {
		m |= 1 << b
	}
	return m
}

// Check says whether a tree dumped on img's CPU can run on host for the
// capabilities caps asks for (criu's cpu_validate_cpuinfo): fpu, the FPU
// state loads here (FPU, FXSR, OSXSAVE and XSAVES as needed, the same
// XSAVE components and sizes); ins, every instruction set extension of
// the image's CPU is here; cpu, every feature word is the same. The
// error names what differs, with criu's words.
func Check(img, host *Info, caps Caps) error {
	if caps&CapFPU != 0 {
		var miss []string
		for _, f := range []struct {
			bit  int
			name string
		}{{featureFPU, "fpu"}, {featureFXSR, "fxsr"}, {featureOSXSAVE, "osxsave"}, {featureXSAVES, "xsaves"}} {
			if img.Has(f.bit) && !host.Has(f.bit) {
				miss = append(miss, f.name)
			}
		}
		if len(miss) > 0 {
			return fmt.Errorf("cpu: FPU feature required by image is not supported on host (%s): %w", strings.Join(miss, ", "), ErrMismatch)
		}
		if m := img.XFeatures &^ host.XFeatures; m != 0 {
			return fmt.Errorf("cpu: CPU xfeatures has unsupported bits (%#x): %w", m, ErrMismatch)
		}
		if img.XSaveSize != host.XSaveSize {
			return fmt.Errorf("cpu: CPU xsave size mismatch (%d/%d): %w", img.XSaveSize, host.XSaveSize, ErrMismatch)
		}
		if img.XSaveMax != host.XSaveMax {
			return fmt.Errorf("cpu: CPU xsave max size mismatch (%d/%d): %w", img.XSaveMax, host.XSaveMax, ErrMismatch)
		}
	}
	if caps&CapIns != 0 {
		var miss []string
		for w := range NumWords {
			if m := img.Caps[w] & insMask[w] &^ host.Caps[w]; m != 0 {
				miss = append(miss, fmt.Sprintf("word %d: %#x", w, m))
			}
		}
		if len(miss) > 0 {
			return fmt.Errorf("cpu: CPU instruction capabilities do not match run time (the image's CPU has instructions this one lacks: %s): %w", strings.Join(miss, "; "), ErrMismatch)
		}
	}
	if caps&CapCPU != 0 {
		// criu compares the feature words only: the same features on
		// another model (or vendor) pass.
		var diff []string
		for w := range NumWords {
			if img.Caps[w] != host.Caps[w] {
				diff = append(diff, fmt.Sprintf("word %d: %#x/%#x", w, img.Caps[w], host.Caps[w]))
			}
		}
		if len(diff) > 0 {
			return fmt.Errorf("cpu: CPU capabilities do not match run time (%s): %w", strings.Join(diff, "; "), ErrMismatch)
		}
	}
	return nil
}
