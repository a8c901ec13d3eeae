package e2e

import (
	"os"
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestICMPDatagramSockets: ICMP datagram ("ping") sockets, IPv4 and
// IPv6, bound by their first echo or bound and connected, keep their
// echo identifier and get echo replies after the restore (icmp.c checks
// from inside). They need the group in net.ipv4.ping_group_range: the
// victim runs in a network namespace of the test's where it is. criu
// 4.2's result is logged (its self-check waits out the replies criu's
// restore loses: ~30 s, beside the other parallel tests).
func TestICMPDatagramSockets(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	ns := newLoopbackNS(t)
	in(t, ns, func() {
		if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0); err != nil {
			t.Fatalf("ping_group_range of the test's network namespace: %v", err)
		}
	})
	var v *testutil.Victim
	in(t, ns, func() {
		v = testutil.StartVictim(t, "icmp")
		v.WaitReady(t)
	})
	dir := t.TempDir()
	in(t, ns, func() { testutil.Dump(t, v.Pid, dir) })
	v.Reap(t)
	testutil.CheckImages(t, dir)
	in(t, ns, func() { testutil.RestoreDetached(t, dir, v) })
	v.TermAndCheck(t)

	in(t, ns, func() {
		w := testutil.StartVictim(t, "icmp")
		w.WaitReady(t)
		t.Logf("criu 4.2 on icmp: %s", testutil.CriuOutcome(t, w))
	})
}
