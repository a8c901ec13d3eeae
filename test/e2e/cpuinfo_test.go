package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/cpuinfo"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestCPUInfoCross: `stasis cpuinfo dump` writes the cpuinfo.img criu 4.2
// writes on this machine, byte for byte; criu 4.2's `cpuinfo check`
// accepts stasis' image and stasis' check accepts criu's, for every
// capability; an image of a CPU with an instruction this one lacks is
// refused by both, with criu's words.
func TestCPUInfoCross(t *testing.T) {
	t.Parallel()
	ours, theirs := t.TempDir(), t.TempDir()
	if r := testutil.Run(t, 10*time.Second, "cpuinfo", "dump", "-D", ours); r.Code != 0 {
		t.Fatalf("stasis cpuinfo dump\n%s", r)
	}
	if r := testutil.RunCRIU(t, 20*time.Second, theirs, "cpuinfo", "dump", "-D", theirs); r.Code != 0 {
		t.Fatalf("criu cpuinfo dump\n%s\n%s", r, testutil.CriuErrors(r.Log))
	}
	a, _ := os.ReadFile(filepath.Join(ours, "cpuinfo.img"))
	b, _ := os.ReadFile(filepath.Join(theirs, "cpuinfo.img"))
	if !bytes.Equal(a, b) {
		mine, err1 := cpuinfo.Read(&images.Dir{Path: ours})
		ref, err2 := cpuinfo.Read(&images.Dir{Path: theirs})
		t.Errorf("stasis' cpuinfo.img (%d bytes) differs from criu 4.2's (%d bytes):\nstasis %+v %v\ncriu   %+v %v", len(a), len(b), mine, err1, ref, err2)
	}
	for _, caps := range [][]string{nil, {"--cpu-cap=all"}, {"--cpu-cap=cpu"}} {
		if r := testutil.RunCRIU(t, 20*time.Second, ours, append([]string{"cpuinfo", "check", "-D", ours}, caps...)...); r.Code != 0 {
			t.Errorf("criu 4.2 cpuinfo check %v of stasis' image\n%s\n%s", caps, r, testutil.CriuErrors(r.Log))
		}
		if r := testutil.Run(t, 10*time.Second, append([]string{"cpuinfo", "check", "-D", theirs}, caps...)...); r.Code != 0 {
			t.Errorf("stasis cpuinfo check %v of criu's image\n%s", caps, r)
		}
	}

	// A CPU with RDSEED (7.0 EBX bit 18) and a larger XSAVE area.
	h, err := cpuinfo.Host()
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		name, caps, msg string
		mod             func(i *cpuinfo.Info)
	}{
		{"rdseed", "--cpu-cap=ins", "CPU instruction capabilities do not match run time", func(i *cpuinfo.Info) { i.Caps[9] |= 1 << 18 }},
		{"xsave", "--cpu-cap=fpu", "CPU xsave size mismatch", func(i *cpuinfo.Info) { i.XSaveSize += 64 }},
	} {
		if bad.name == "rdseed" && h.Caps[9]&(1<<18) != 0 {
			continue // this CPU has it
		}
		i := *h
		bad.mod(&i)
		dir := t.TempDir()
		if err := (&images.Dir{Path: dir}).Write(cpuinfo.ImageName, i.Entry()); err != nil {
			t.Fatal(err)
		}
		r := testutil.Run(t, 10*time.Second, "cpuinfo", "check", "-D", dir, bad.caps)
		if r.Code != 1 {
			t.Errorf("%s: stasis cpuinfo check passed\n%s", bad.name, r)
		}
		testutil.AssertContains(t, r.Stderr, bad.msg)
		if r := testutil.RunCRIU(t, 20*time.Second, dir, "cpuinfo", "check", "-D", dir, bad.caps); r.Code != 1 {
			t.Errorf("%s: criu 4.2 cpuinfo check passed\n%s", bad.name, r)
		} else {
			testutil.AssertContains(t, testutil.CriuErrors(r.Log), bad.msg)
		}
	}
}

// TestCPUCapDumpRestore: a dump with --cpu-cap records the CPU, which a
// restore with --cpu-cap checks (and criu 4.2 restores those images with
// its own check); a plain dump records nothing, and a restore that asks
// for a check of it fails before it creates a task, as criu's does.
func TestCPUCapDumpRestore(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v, status := counterVictim(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "-R", "--cpu-cap")
	if _, err := os.Stat(filepath.Join(dir, "cpuinfo.img")); err != nil {
		t.Fatalf("dump --cpu-cap: %v", err)
	}
	plain := t.TempDir()
	testutil.Dump(t, v.Pid, plain)
	v.Reap(t)
	if _, err := os.Stat(filepath.Join(plain, "cpuinfo.img")); err == nil {
		t.Errorf("a dump without --cpu-cap wrote cpuinfo.img (criu writes none)")
	}
	msg := testutil.RestoreFail(t, plain, "--cpu-cap=fpu")
	testutil.AssertContains(t, msg, "no cpuinfo image")
	testutil.RestoreDetached(t, dir, v, "--cpu-cap=all")
	n := testutil.ReadCounter(t, status)
	testutil.WaitFor(t, 5*time.Second, "the counter to go on", func() bool { return testutil.ReadCounter(t, status) > n+3 })
	v.TermAndCheck(t)
}

// TestSwrkCPUInfo: CPUINFO_DUMP and CPUINFO_CHECK over swrk, each
// answered as criu 4.2 answers it (type, success), each tool checking the
// image the other wrote; a DUMP with cpu_cap set writes cpuinfo.img.
func TestSwrkCPUInfo(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	ref := testutil.CRIU(t)
	bin := testutil.StasisBin(t)
	req := func(typ rpc.CriuReqType, dir string, caps *uint32) *rpc.CriuReq {
		return &rpc.CriuReq{Type: typ.Enum(), Opts: &rpc.CriuOpts{ImagesDirFd: proto.Int32(dirFd(t, dir)), LogLevel: proto.Int32(4), CpuCap: caps}}
	}
	call := func(b string, r *rpc.CriuReq) *rpc.CriuResp {
		sw := startSwrk(t, b)
		_, resp := sw.call(r)
		sw.exit()
		if resp == nil {
			t.Fatalf("%s: no reply to %v", b, r.GetType())
		}
		return resp
	}
	dirs := map[string]string{ref: t.TempDir(), bin: t.TempDir()}
	for b, dir := range dirs {
		if r := call(b, req(rpc.CriuReqType_CPUINFO_DUMP, dir, nil)); !r.GetSuccess() || r.GetType() != rpc.CriuReqType_CPUINFO_DUMP {
			t.Errorf("%s CPUINFO_DUMP: %s %s", b, describeResp(r), r.GetCrErrmsg())
		}
	}
	// A CPU with one more XSAVE component than this one: every check
	// with fpu refuses it, cpu_cap 4 (ins) alone does not look.
	h, err := cpuinfo.Host()
	if err != nil {
		t.Fatal(err)
	}
	i := *h
	i.XFeatures |= 1 << 9
	more := t.TempDir()
	if err := (&images.Dir{Path: more}).Write(cpuinfo.ImageName, i.Entry()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir  string
		caps *uint32
	}{{dirs[ref], nil}, {dirs[bin], nil}, {dirs[bin], proto.Uint32(2)}, {more, nil}, {more, proto.Uint32(1)}, {more, proto.Uint32(4)}, {t.TempDir(), proto.Uint32(0)}} {
		want := call(ref, req(rpc.CriuReqType_CPUINFO_CHECK, tc.dir, tc.caps))
		got := call(bin, req(rpc.CriuReqType_CPUINFO_CHECK, tc.dir, tc.caps))
		if got.GetSuccess() != want.GetSuccess() || got.GetType() != want.GetType() {
			t.Errorf("CPUINFO_CHECK of %s with cpu_cap %v: stasis %s %q, criu 4.2 %s %q", tc.dir, tc.caps, describeResp(got), got.GetCrErrmsg(), describeResp(want), want.GetCrErrmsg())
		}
	}

	v, _ := counterVictim(t)
	dir := t.TempDir()
	r := dumpReq(t, v.Pid, dir, true)
	r.Opts.CpuCap = proto.Uint32(0)
	if resp := call(bin, r); !resp.GetSuccess() {
		t.Fatalf("DUMP with cpu_cap: %s", resp.GetCrErrmsg())
	}
	if _, err := os.Stat(filepath.Join(dir, cpuinfo.ImageName)); err != nil {
		t.Errorf("DUMP with cpu_cap 0: %v (criu 4.2 writes cpuinfo.img)", err)
	}
	v.TermAndCheck(t)
}
