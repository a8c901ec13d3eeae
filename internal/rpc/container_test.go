package rpc

import (
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/cgroup"
)

// TestCgroupMode: criu's reading of manage_cgroups and its mode.
func TestCgroupMode(t *testing.T) {
	for _, tc := range []struct {
		o    *rpc.CriuOpts
		want cgroup.Mode
	}{
		{&rpc.CriuOpts{}, cgroup.ModeSoft},
		{&rpc.CriuOpts{ManageCgroups: proto.Bool(true)}, cgroup.ModeSoft},
		{&rpc.CriuOpts{ManageCgroups: proto.Bool(false)}, cgroup.ModeIgnore},
		{&rpc.CriuOpts{ManageCgroups: proto.Bool(false), ManageCgroupsMode: rpc.CriuCgMode_FULL.Enum()}, cgroup.ModeFull},
		{&rpc.CriuOpts{ManageCgroupsMode: rpc.CriuCgMode_STRICT.Enum()}, cgroup.ModeStrict},
		{&rpc.CriuOpts{ManageCgroupsMode: rpc.CriuCgMode_DEFAULT.Enum()}, cgroup.ModeSoft},
	} {
		if got, err := cgroupMode(tc.o); err != nil || got != tc.want {
			t.Errorf("%v: %v, %v; want %v", tc.o, got, err, tc.want)
		}
	}
	var r DumpRequest
	o := &rpc.CriuOpts{CgRoot: []*rpc.CgroupRoot{{Ctrl: proto.String("cpu"), Path: proto.String("/x")}}, FreezeCgroup: proto.String("/sys/fs/cgroup/freezer/c1")}
	if err := dumpCgroups(o, &r); err != nil || len(r.Cgroups.Roots) != 1 || r.Cgroups.Roots[0].Path != "/x" || r.Cgroups.FreezeCgroup == "" {
		t.Errorf("dumpCgroups: %+v, %v", r.Cgroups, err)
	}
}
