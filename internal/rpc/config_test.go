package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"google.golang.org/protobuf/proto"
)

// TestConfigPrecedence: criu's order over RPC. A default file
// ($CRIU_CONFIG_FILE here) sets what the request leaves unset; the
// request wins over it; the request's config_file wins over both.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	def := filepath.Join(dir, "default.conf")
	req := filepath.Join(dir, "runc.conf")
	os.WriteFile(def, []byte("tcp-established\nfile-locks\nlog-file def.log\nghost-limit 2M\nexternal pipe:[1]\n"), 0o644)
	os.WriteFile(req, []byte("# runc.conf\nno-file-locks\nlog-file \"runc conf.log\"\nnetwork-lock skip\nmanage-cgroups soft\n"), 0o644)
	t.Setenv("CRIU_CONFIG_FILE", def)
	t.Setenv("HOME", dir) // no $HOME/.criu/default.conf
	o := &rpc.CriuOpts{FileLocks: proto.Bool(true), TcpEstablished: proto.Bool(false), LogFile: proto.String("req.log"), ConfigFile: proto.String(req)}
	if err := configure(o); err != nil {
		t.Fatal(err)
	}
	if o.GetTcpEstablished() {
		t.Error("tcp-established of a default file overrode the request's false")
	}
	if o.GetFileLocks() {
		t.Error("config_file's no-file-locks did not override the request")
	}
	if o.GetLogFile() != "runc conf.log" || o.GetGhostLimit() != 2<<20 || len(o.GetExternal()) != 1 {
		t.Errorf("log_file %q ghost_limit %d external %v", o.GetLogFile(), o.GetGhostLimit(), o.GetExternal())
	}
	if o.GetNetworkLock() != rpc.CriuNetworkLockMethod_SKIP || !o.GetManageCgroups() || o.GetManageCgroupsMode() != rpc.CriuCgMode_SOFT {
		t.Errorf("network_lock %v manage_cgroups %v mode %v", o.GetNetworkLock(), o.GetManageCgroups(), o.GetManageCgroupsMode())
	}
	// A missing config_file is skipped (runc always names runc.conf).
	o = &rpc.CriuOpts{ConfigFile: proto.String(filepath.Join(dir, "none.conf"))}
	if err := configure(o); err != nil {
		t.Errorf("missing config_file: %v", err)
	}
	os.WriteFile(req, []byte("no-such-option\n"), 0o644)
	o = &rpc.CriuOpts{ConfigFile: proto.String(req)}
	if err := configure(o); !errors.Is(err, ErrBadRequest) {
		t.Errorf("unknown option in config_file: %v, want a bad request naming it", err)
	}
}

// TestDisplayStatsAndConfig: a DUMP whose config_file sets display-stats
// (and whose request sets it too) has its stats shown once it succeeded,
// from the work dir; the backend gets the file options of the config.
func TestDisplayStatsAndConfig(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("CRIU_CONFIG_FILE", "")
	conf := filepath.Join(dir, "c.conf")
	os.WriteFile(conf, []byte("display-stats\nfile-locks\n"), 0o644)
	var shown string
	var got DumpRequest
	b := Backend{
		Dump: func(_ context.Context, r DumpRequest) error { got = r; return nil },
		DisplayStats: func(_ io.Writer, work string, restore bool) error {
			shown = fmt.Sprint(work, restore)
			return nil
		},
	}
	fd, done := pair(t, b)
	r := roundTrip(t, fd, &rpc.CriuReq{Type: rpc.CriuReqType_DUMP.Enum(), Opts: &rpc.CriuOpts{
		ImagesDirFd: proto.Int32(-1), ImagesDir: proto.String(dir), Pid: proto.Int32(int32(os.Getpid())), ConfigFile: proto.String(conf)}})
	if !r.GetSuccess() {
		t.Fatalf("DUMP: %v", r)
	}
	<-done
	if shown != fmt.Sprint(dir, false) || !got.Files.FileLocks {
		t.Errorf("display_stats shown %q, file_locks %v; want the work dir's dump stats and the config's file-locks", shown, got.Files.FileLocks)
	}
}

// TestServiceRefusesSibling: a connection of `service` (its client is not
// the serving process' parent) gets criu's refusal of rst_sibling.
func TestServiceRefusesSibling(t *testing.T) {
	t.Setenv(serviceConnEnv, "1")
	fd, done := pair(t, Backend{})
	r := roundTrip(t, fd, &rpc.CriuReq{Type: rpc.CriuReqType_RESTORE.Enum(), Opts: &rpc.CriuOpts{
		ImagesDirFd: proto.Int32(-1), ImagesDir: proto.String(t.TempDir()), RstSibling: proto.Bool(true)}})
	<-done
	if r.GetSuccess() || r.GetType() != rpc.CriuReqType_RESTORE || r.GetCrErrmsg() != "rpc: rst_sibling is not allowed in standalone service: bad request" {
		t.Errorf("service RESTORE rst_sibling: %v", r)
	}
}
