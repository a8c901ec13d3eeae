package cpuinfo

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stasis-cr/stasis/internal/images"
)

// TestInsMaskMatchesCRIU: for every bit criu 4.2 was asked about
// (testdata/criu42-ins.txt), --cpu-cap=ins counts it iff criu does.
func TestInsMaskMatchesCRIU(t *testing.T) {
	f, err := os.Open("testdata/criu42-ins.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		var w, b, rejected int
		if strings.HasPrefix(sc.Text(), "#") {
			continue
		}
		if _, err := fmt.Sscan(sc.Text(), &w, &b, &rejected); err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		n++
		if got := insMask[w]&(1<<b) != 0; got != (rejected == 1) {
			t.Errorf("word %d bit %d: stasis counts it as an instruction: %v, criu 4.2: %v", w, b, got, rejected == 1)
		}
	}
	if n < 400 {
		t.Errorf("only %d verdicts read", n)
	}
}

func TestCheck(t *testing.T) {
	h := &Info{Vendor: VendorAMD, Family: 26, XFeatures: 0xe5, XSaveSize: 2432, XSaveMax: 2432}
	h.Caps[wordLeaf1EDX] = 0x178bfbff
	h.Caps[wordLeaf7EBX] = 0xf1bb03a9
	mod := func(f func(i *Info)) *Info { i := *h; f(&i); return &i }
	for _, tc := range []struct {
		name string
		img  *Info
		caps Caps
		msg  string // "" = passes
	}{
		{"same", h, CapAll, ""},
		{"other model passes cpu", mod(func(i *Info) { i.Model++; i.Vendor = VendorIntel }), CapAll, ""},
		{"xfeature", mod(func(i *Info) { i.XFeatures |= 1 << 9 }), CapFPU, "xfeatures has unsupported bits (0x200)"},
		{"fewer xfeatures", mod(func(i *Info) { i.XFeatures &^= 1 << 7 }), CapFPU, ""},
		{"xsave size", mod(func(i *Info) { i.XSaveSize += 64 }), CapFPU, "xsave size mismatch (2496/2432)"},
		{"xsave max", mod(func(i *Info) { i.XSaveMax += 64 }), CapFPU, "xsave max size mismatch (2496/2432)"},
		{"xsave size, ins only", mod(func(i *Info) { i.XSaveSize += 64 }), CapIns, ""},
		{"rdseed", mod(func(i *Info) { i.Caps[wordLeaf7EBX] |= 1 << 18 }), CapIns, "instruction capabilities do not match"},
		{"rdseed, fpu only", mod(func(i *Info) { i.Caps[wordLeaf7EBX] |= 1 << 18 }), CapFPU, ""},
		{"fewer instructions", mod(func(i *Info) { i.Caps[wordLeaf1EDX] &^= 1 << 25 }), CapIns | CapFPU, ""},
		{"fewer, strict", mod(func(i *Info) { i.Caps[wordLeaf1EDX] &^= 1 << 25 }), CapCPU, "capabilities do not match run time"},
		{"no fpu on host", h, CapFPU, ""},
	} {
		err := Check(tc.img, h, tc.caps)
		switch {
		case tc.msg == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.msg != "" && (err == nil || !strings.Contains(err.Error(), tc.msg) || !errors.Is(err, ErrMismatch)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.msg)
		}
	}
}

func TestParseCaps(t *testing.T) {
	for _, tc := range []struct {
		arg    string
		hasArg bool
		want   Caps
		bad    bool
	}{
		{"", false, CapAll | CapImage, false},
		{"none", true, 0, false},
		{"fpu", true, CapDefault | CapImage, false},
		{"cpu", true, CapAll | CapImage, false},
		{"all", true, CapAll | CapImage, false},
		{"^ins", true, CapFPU | CapImage, false},
		{"none,cpu", true, CapCPU | CapImage, false},
		{"sse", true, 0, true},
	} {
		got, err := ParseCaps(tc.arg, tc.hasArg)
		if (err != nil) != tc.bad || !tc.bad && got != tc.want {
			t.Errorf("ParseCaps(%q, %v) = %v %v, want %v", tc.arg, tc.hasArg, got, err, tc.want)
		}
	}
}

// TestImageRoundTrip: this CPU's image decodes to the same Info, and an
// image of an unknown vendor or of a capability array criu never wrote is
// refused.
func TestImageRoundTrip(t *testing.T) {
	h, err := Host()
	if err != nil {
		t.Skip(err)
	}
	dir, err := images.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := Dump(dir); err != nil {
		t.Fatal(err)
	}
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Caps != h.Caps || got.XFeatures != h.XFeatures || got.Family != h.Family || got.ModelID != h.ModelID {
		t.Errorf("read back %+v, want %+v", got, h)
	}
	if err := CheckDir(dir, CapAll|CapImage); err != nil {
		t.Errorf("check of this CPU's own image: %v", err)
	}
	e := h.Entry()
	e.X86Entry[0].Capability = e.X86Entry[0].Capability[:5]
	if _, err := FromEntry(e); !errors.Is(err, ErrBadImage) {
		t.Errorf("5 words: %v", err)
	}
	e = h.Entry()
	e.X86Entry[0].VendorId = nil
	if _, err := FromEntry(e); !errors.Is(err, ErrBadImage) || !strings.Contains(err.Error(), "Unknown cpu vendor 0") {
		t.Errorf("unknown vendor: %v", err)
	}
	if err := CheckDir(&images.Dir{Path: t.TempDir()}, CapFPU|CapImage); !errors.Is(err, ErrNoImage) {
		t.Errorf("no image: %v", err)
	}
	if err := CheckDir(&images.Dir{Path: t.TempDir()}, CapAll); err != nil {
		t.Errorf("no --cpu-cap: %v", err)
	}
}
