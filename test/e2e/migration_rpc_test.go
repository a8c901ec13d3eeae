package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestSwrkPreDump: criu's RPC chain on one swrk connection, as
// cr-service.c serves it: PRE_DUMP, its reply with no notification,
// PRE_DUMP again (parent_img, track_mem), then the final DUMP; the chain
// restores, every page checked by the victim. SINGLE_PRE_DUMP is one
// pre-dump per connection.
func TestSwrkPreDump(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "track", "16", "50")
	v.WaitReady(t)
	root := t.TempDir()
	dir := func(n string) string {
		p := filepath.Join(root, n)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		return p
	}
	req := func(typ rpc.CriuReqType, d, parent string) *rpc.CriuReq {
		o := &rpc.CriuOpts{ImagesDirFd: proto.Int32(dirFd(t, dir(d))), Pid: proto.Int32(int32(v.Pid)),
			LogLevel: proto.Int32(4), LogFile: proto.String("rpc.log"), NotifyScripts: proto.Bool(true), TrackMem: proto.Bool(true)}
		if parent != "" {
			o.ParentImg = proto.String(parent)
		}
		return &rpc.CriuReq{Type: typ.Enum(), Opts: o}
	}
	c := startSwrk(t, testutil.StasisBin(t))
	seen, r := c.call(req(rpc.CriuReqType_SINGLE_PRE_DUMP, "0", ""))
	if len(seen) != 1 || r.GetType() != rpc.CriuReqType_SINGLE_PRE_DUMP || !r.GetSuccess() {
		t.Fatalf("SINGLE_PRE_DUMP: %v\n%s", seen, logTail(dir("0"), "rpc.log"))
	}
	if code := c.exit(); code != 0 {
		t.Fatalf("swrk after SINGLE_PRE_DUMP exited %d", code)
	}

	c = startSwrk(t, testutil.StasisBin(t))
	seen, r = c.call(req(rpc.CriuReqType_PRE_DUMP, "1", "../0"))
	if len(seen) != 1 || r.GetType() != rpc.CriuReqType_PRE_DUMP || !r.GetSuccess() {
		t.Fatalf("PRE_DUMP: %v\n%s", seen, logTail(dir("1"), "rpc.log"))
	}
	nextChange(t, v, 1)
	time.Sleep(200 * time.Millisecond)
	seen, r = c.call(req(rpc.CriuReqType_PRE_DUMP, "2", "../1"))
	if len(seen) != 1 || !r.GetSuccess() {
		t.Fatalf("second PRE_DUMP: %v\n%s", seen, logTail(dir("2"), "rpc.log"))
	}
	seen, r = c.call(req(rpc.CriuReqType_DUMP, "3", "../2"))
	if r.GetType() != rpc.CriuReqType_DUMP || !r.GetSuccess() {
		t.Fatalf("DUMP after PRE_DUMP: %v\n%s", seen, logTail(dir("3"), "rpc.log"))
	}
	t.Logf("DUMP: %v", seen)
	if code := c.exit(); code != 0 {
		t.Fatalf("swrk exited %d", code)
	}
	v.Reap(t)
	for _, n := range []string{"1", "2", "3"} {
		own, parent := pagesOf(t, dir(n), v.Pid)
		t.Logf("dir %s: %d pages, %d in parent", n, own, parent)
		if parent == 0 {
			t.Errorf("dir %s has no page in parent", n)
		}
	}
	testutil.RestoreDetached(t, dir("3"), v)
	v.TermAndCheck(t)
	testutil.AssertContains(t, v.LogTail(), "changes: 1", "PASS")
}
