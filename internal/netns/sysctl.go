package netns

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/sysctl"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// The sysctls of a network namespace, in criu's images by position: the
// lists below are the image format (criu's devconfs4, devconfs6,
// unix_conf_entries and ipv4_sysctl), their order must not change. They
// are read and written under /proc/sys/net by a thread inside the
// namespace, which is the namespace /proc/sys/net shows it.

var devconfs4 = []string{
	"accept_local", "accept_redirects", "accept_source_route", "arp_accept",
	"arp_announce", "arp_filter", "arp_ignore", "arp_notify", "bootp_relay",
	"disable_policy", "disable_xfrm", "force_igmp_version", "forwarding",
	"igmpv2_unsolicited_report_interval", "igmpv3_unsolicited_report_interval",
	"log_martians", "medium_id", "promote_secondaries", "proxy_arp",
	"proxy_arp_pvlan", "route_localnet", "rp_filter", "secure_redirects",
	"send_redirects", "shared_media", "src_valid_mark", "tag",
	"ignore_routes_with_linkdown", "drop_gratuitous_arp",
	"drop_unicast_in_l2_multicast",
}

var devconfs6 = []string{
	"accept_dad", "accept_ra", "accept_ra_defrtr", "accept_ra_from_local",
	"accept_ra_min_hop_limit", "accept_ra_mtu", "accept_ra_pinfo",
	"accept_ra_rt_info_max_plen", "accept_ra_rtr_pref", "accept_redirects",
	"accept_source_route", "autoconf", "dad_transmits", "disable_ipv6",
	"drop_unicast_in_l2_multicast", "drop_unsolicited_na", "force_mld_version",
	"force_tllao", "forwarding", "hop_limit", "ignore_routes_with_linkdown",
	"keep_addr_on_down", "max_addresses", "max_desync_factor",
	"mldv1_unsolicited_report_interval", "mldv2_unsolicited_report_interval",
	"mtu", "ndisc_notify", "optimistic_dad", "proxy_ndp", "regen_max_retry",
	"router_probe_interval", "router_solicitation_delay",
	"router_solicitation_interval", "router_solicitations", "stable_secret",
	"suppress_frag_ndisc", "temp_prefered_lft", "temp_valid_lft",
	"use_oif_addrs_only", "use_optimistic", "use_tempaddr",
}

// strConf are the string sysctls among the lists.
var strConf = map[string]bool{"stable_secret": true, "ping_group_range": true}

var unixConf = []string{"max_dgram_qlen"}

// ipv4Sysctls are net.ipv4 sysctls of the namespace; criu keeps
// ping_group_range only when it is not the default.
var ipv4Sysctls = []string{"ping_group_range"}

const defaultPingGroupRange = "1\t0"

func readSysctl(path string, str bool) *sysctl.SysctlEntry {
	typ := sysctl.SysctlType_CTL_32
	if str {
		typ = sysctl.SysctlType_CTL_STR
	}
	e := &sysctl.SysctlEntry{Type: typ.Enum()}
	b, err := os.ReadFile("/proc/sys/net/" + path)
	if err != nil {
		return e // missing here (or stable_secret unset: EIO): no value
	}
	s := strings.TrimSuffix(string(b), "\n")
	if str {
		e.Sarg = proto.String(s)
		return e
	}
	if n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32); err == nil {
		e.Iarg = proto.Int32(int32(n))
	}
	return e
}

// readConfs reads the sysctls names under net/BASE (ipv4/conf/eth0, ...).
func readConfs(base string, names []string) []*sysctl.SysctlEntry {
	out := make([]*sysctl.SysctlEntry, len(names))
	for i, n := range names {
		out[i] = readSysctl(base+"/"+n, strConf[n])
	}
	return out
}

// writeConfs writes the sysctls of an image under net/BASE, those that
// differ from def (nil: all) but mtu, and accept_redirects last, after
// forwarding, which changes it. A sysctl this kernel lacks is skipped;
// with weak (--weak-sysctls) any that cannot be written is.
func writeConfs(base string, names []string, confs, def []*sysctl.SysctlEntry, weak bool) error {
	var last []int
	order := make([]int, 0, len(confs))
	for i := range confs {
		if i >= len(names) {
			break // a sysctl of a newer tool: unknown here
		}
		if names[i] == "accept_redirects" {
			last = append(last, i)
			continue
		}
		order = append(order, i)
	}
	for _, i := range append(order, last...) {
		c := confs[i]
		if def != nil && i < len(def) && sameConf(c, def[i]) && names[i] != "mtu" {
			continue
		}
		var val string
		switch {
		case c.GetType() == sysctl.SysctlType_CTL_32 && c.Iarg != nil:
			val = strconv.Itoa(int(c.GetIarg()))
		case c.GetType() == sysctl.SysctlType_CTL_STR && c.Sarg != nil:
			val = c.GetSarg()
		default:
			continue
		}
		if err := writeSysctl(base+"/"+names[i], val); err != nil && !weak {
			return err
		}
	}
	return nil
}

func writeSysctl(path, val string) error {
	err := os.WriteFile("/proc/sys/net/"+path, []byte(val), 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sysctl net/%s = %q: %w (--weak-sysctls skips what cannot be written)", path, val, err)
	}
	return nil
}

func sameConf(a, b *sysctl.SysctlEntry) bool {
	if a.GetType() != b.GetType() {
		return false
	}
	if a.GetType() == sysctl.SysctlType_CTL_32 {
		return a.Iarg != nil && b.Iarg != nil && a.GetIarg() == b.GetIarg()
	}
	return a.Sarg != nil && b.Sarg != nil && a.GetSarg() == b.GetSarg()
}

// readNSConfs reads the namespace-wide sysctls into e.
func readNSConfs(e nsConfs) {
	*e.def4 = readConfs("ipv4/conf/default", devconfs4)
	*e.all4 = readConfs("ipv4/conf/all", devconfs4)
	if ipv6() {
		*e.def6 = readConfs("ipv6/conf/default", devconfs6)
		*e.all6 = readConfs("ipv6/conf/all", devconfs6)
	}
	*e.unix = readConfs("unix", unixConf)
	p := readSysctl("ipv4/"+ipv4Sysctls[0], true)
	if p.GetSarg() == defaultPingGroupRange {
		p.Sarg = nil
	}
	*e.ipv4 = []*sysctl.SysctlEntry{p}
}

type nsConfs struct {
	def4, all4, def6, all6, unix, ipv4 *[]*sysctl.SysctlEntry
}

func ipv6() bool {
	var st unix.Stat_t
	return unix.Stat("/proc/sys/net/ipv6", &st) == nil
}
