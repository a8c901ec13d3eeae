package e2e

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestNetnsLinkKindsRefused: link kinds CRIU 4.2 refuses too ("net:
// Unsupported link ... kind K") are refused at dump, naming the link and
// its kind, the tree left running: vxlan, ipvlan, gre (one the user made,
// not the kernel's fallback gre0). A kind this kernel cannot make (no
// module) is logged and left out. sit, which CRIU restores, is one of
// those here: stasis refuses it (docs/containers.md).
func TestNetnsLinkKindsRefused(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CRIU(t)
	t.Parallel()
	local, remote := net.ParseIP("10.77.0.1"), net.ParseIP("10.77.0.2")
	for _, tc := range []struct {
		kind string
		link func(lo int) netlink.Link
	}{
		{"vxlan", func(lo int) netlink.Link {
			return &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "k7"}, VxlanId: 42, Port: 4789, VtepDevIndex: lo}
		}},
		{"ipvlan", func(lo int) netlink.Link {
			return &netlink.IPVlan{LinkAttrs: netlink.LinkAttrs{Name: "k7", ParentIndex: lo}, Mode: netlink.IPVLAN_MODE_L2}
		}},
		{"gre", func(int) netlink.Link {
			return &netlink.Gretun{LinkAttrs: netlink.LinkAttrs{Name: "k7"}, Local: local, Remote: remote}
		}},
		{"sit", func(int) netlink.Link {
			return &netlink.Sittun{LinkAttrs: netlink.LinkAttrs{Name: "k7"}, Local: local, Remote: remote}
		}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			v := testutil.StartProgram(t, testutil.RequireTool(t, "unshare"), "--net", "sleep", "1000")
			self, _ := os.Readlink("/proc/thread-self/ns/net")
			testutil.WaitFor(t, 5*time.Second, "unshare to enter its namespace and exec sleep", func() bool {
				l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", v.Pid))
				return l != self && testutil.Comm(v.Pid) == "sleep"
			})
			ns, err := netns.GetFromPid(v.Pid)
			if err != nil {
				t.Fatal(err)
			}
			defer ns.Close()
			h, err := netlink.NewHandleAt(ns)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			lo, err := h.LinkByName("lo")
			if err != nil {
				t.Fatal(err)
			}
			if err := h.LinkAdd(tc.link(lo.Attrs().Index)); err != nil {
				t.Logf("this kernel makes no %s link (%v): left out", tc.kind, err)
				return
			}
			msg := testutil.DumpFail(t, v.Pid, t.TempDir())
			testutil.AssertContains(t, msg, "link k7", "is "+tc.kind+": restoring it is not supported", "the tree was resumed")
			assertRunning(t, v.Pid)
			dir := t.TempDir()
			r := testutil.RunCRIU(t, 30*time.Second, dir, "dump", "-t", strconv.Itoa(v.Pid), "-D", dir, "-R", "--network-lock", "nftables")
			log := nsLogText(r.Log)
			if tc.kind != "sit" && (r.Code == 0 || !strings.Contains(log, "Unsupported link")) {
				t.Errorf("criu 4.2 on a %s link: exit %d, want its refusal\n%s", tc.kind, r.Code, testutil.CriuErrors(log))
			}
			assertRunning(t, v.Pid)
		})
	}
}
