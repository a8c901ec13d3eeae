package e2e

import (
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestSwrkErrorsAsCRIU: for the common failures, stasis' reply has the
// type, the cr_errno and the dump{} or restore{pid: -1} that criu 4.2's
// has, request for request; its cr_errmsg names what failed (criu's is
// the first error line of its log, here its RLIMIT_NOFILE warning, or
// nothing when its log was not open yet).
func TestSwrkErrorsAsCRIU(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	ref := testutil.CRIU(t)
	bin := testutil.StasisBin(t)
	v, _ := counterVictim(t)
	inUse := t.TempDir()
	testutil.Dump(t, v.Pid, inUse, "-R") // its pid stays taken
	byPath := func(typ rpc.CriuReqType, dir string) *rpc.CriuReq {
		return &rpc.CriuReq{Type: typ.Enum(), Opts: &rpc.CriuOpts{
			ImagesDirFd: proto.Int32(-1), ImagesDir: proto.String(dir), Pid: proto.Int32(int32(v.Pid)), LogLevel: proto.Int32(4)}}
	}
	restoreByPath := func(dir string) *rpc.CriuReq {
		r := byPath(rpc.CriuReqType_RESTORE, dir)
		r.Opts.Pid = nil
		return r
	}
	for _, tc := range []struct {
		name string
		req  *rpc.CriuReq
		msg  []string
	}{
		{"dump of a free pid", dumpReq(t, testutil.FreePID(t), t.TempDir(), false), []string{"no such process"}},
		{"dump of a kernel thread", dumpReq(t, 2, t.TempDir(), false), []string{"pid 2", "kernel thread"}},
		{"dump into a missing dir", byPath(rpc.CriuReqType_DUMP, "/nonexistent/stasis-test"), []string{"images_dir", "no such file"}},
		{"restore from a missing dir", restoreByPath("/nonexistent/stasis-test"), []string{"images_dir", "no such file"}},
		{"restore from an empty dir", restoreReq(t, t.TempDir()), []string{"inventory.img"}},
		{"restore of a pid in use", restoreReq(t, inUse), []string{"pid already in use"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sw := startSwrk(t, ref)
			_, want := sw.call(tc.req)
			sw.exit()
			sw = startSwrk(t, bin)
			_, got := sw.call(tc.req)
			sw.exit()
			if want == nil || got == nil {
				t.Fatalf("criu 4.2 replied %v, stasis %v", want, got)
			}
			t.Logf("criu 4.2: %s cr_errno %d cr_errmsg %q", describeResp(want), want.GetCrErrno(), want.GetCrErrmsg())
			t.Logf("stasis:   %s cr_errno %d cr_errmsg %q", describeResp(got), got.GetCrErrno(), got.GetCrErrmsg())
			if got.GetSuccess() || got.GetType() != want.GetType() || got.GetCrErrno() != want.GetCrErrno() ||
				(got.Dump == nil) != (want.Dump == nil) || (got.Restore == nil) != (want.Restore == nil) || got.GetRestore().GetPid() != want.GetRestore().GetPid() {
				t.Errorf("stasis' reply differs from criu 4.2's")
			}
			testutil.AssertContains(t, got.GetCrErrmsg(), tc.msg...)
		})
	}
	testutil.AssertRunning(t, v.Pid)
}
