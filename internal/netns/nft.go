package netns

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/stasis-cr/stasis/internal/images"
)

// The nftables ruleset of the namespace, iptables-nft's tables included
// (they are nftables tables), in nftables-ID.img as criu 4.2 writes it:
// the text of `nft list ruleset` (criu asks libnftables for it and gives
// it back to libnftables at restore). stasis reads the ruleset over
// netlink (google/nftables), prints it in nft's syntax and parses that
// syntax back, for what it can print: tables of every family, base and
// regular chains (type, hook, priority, policy), and rules made of
// interface names, ip/ip6 addresses and prefixes, ip protocol, tcp/udp
// ports, meta mark, nfproto and l4proto, ct state, counters and verdicts
// (accept, drop, return, jump, goto). A rule, set or map outside that is
// refused at dump, naming its table and chain, rather than lost. The
// network lock's tables (criu's and stasis') are left out both ways.

func nftName(id uint32) string { return fmt.Sprintf("nftables-%d.img", id) }

// isLockTable tells the network lock's tables (stasis' and criu's),
// which are no part of the namespace's ruleset.
func isLockTable(name string) bool {
	return strings.HasPrefix(name, "CRIU-") || strings.HasPrefix(name, "stasis-")
}

var familyNames = map[nftables.TableFamily]string{
	nftables.TableFamilyIPv4: "ip", nftables.TableFamilyIPv6: "ip6", nftables.TableFamilyINet: "inet",
	nftables.TableFamilyARP: "arp", nftables.TableFamilyBridge: "bridge", nftables.TableFamilyNetdev: "netdev",
}

var hookNames = map[nftables.ChainHook]string{
	*nftables.ChainHookPrerouting: "prerouting", *nftables.ChainHookInput: "input", *nftables.ChainHookForward: "forward",
	*nftables.ChainHookOutput: "output", *nftables.ChainHookPostrouting: "postrouting",
}

// priorityNames are nft's names of chain priorities (ip, ip6, inet).
var priorityNames = []struct {
	name string
	val  int32
}{{"raw", -300}, {"mangle", -150}, {"dstnat", -100}, {"filter", 0}, {"security", 50}, {"srcnat", 100}}

// dumpNftables writes the ruleset of the calling thread's namespace.
func dumpNftables(dir *images.Dir, id uint32) error {
	nft, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	text, err := printRuleset(nft)
	if err != nil {
		return err
	}
	w, err := dir.CreateRaw(nftName(id))
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, text)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("image %s: %w", nftName(id), err)
	}
	return nil
}

func printRuleset(nft *nftables.Conn) (string, error) {
	tables, err := nft.ListTables()
	if err != nil {
		return "", fmt.Errorf("nftables: list tables: %w", err)
	}
	chains, err := nft.ListChains()
	if err != nil {
		return "", fmt.Errorf("nftables: list chains: %w", err)
	}
	var b strings.Builder
	for _, t := range tables {
		if isLockTable(t.Name) {
			continue
		}
		fam, ok := familyNames[t.Family]
		if !ok {
			return "", fmt.Errorf("nftables table %s of family %d: %w", t.Name, t.Family, ErrNotSupported)
		}
		if sets, err := nft.GetSets(t); err == nil && len(sets) > 0 {
			return "", fmt.Errorf("nftables table %s %s: set %s: sets and maps are %w yet", fam, t.Name, sets[0].Name, ErrNotSupported)
		}
		fmt.Fprintf(&b, "table %s %s {\n", fam, t.Name)
		first := true
		for _, c := range chains {
			if c.Table.Name != t.Name || c.Table.Family != t.Family {
				continue
			}
			if !first {
				b.WriteString("\n")
			}
			first = false
			fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
			if c.Hooknum != nil {
				hook, ok := hookNames[*c.Hooknum]
				if !ok || t.Family == nftables.TableFamilyNetdev || c.Device != "" {
					return "", fmt.Errorf("nftables chain %s %s %s: hook %d: %w", fam, t.Name, c.Name, *c.Hooknum, ErrNotSupported)
				}
				prio := int32(0)
				if c.Priority != nil {
					prio = int32(*c.Priority)
				}
				fmt.Fprintf(&b, "\t\ttype %s hook %s priority %s;", c.Type, hook, priorityText(prio))
				if c.Policy != nil {
					fmt.Fprintf(&b, " policy %s;", map[nftables.ChainPolicy]string{nftables.ChainPolicyAccept: "accept", nftables.ChainPolicyDrop: "drop"}[*c.Policy])
				}
				b.WriteString("\n")
			}
			rules, err := nft.GetRules(t, c)
			if err != nil {
				return "", fmt.Errorf("nftables chain %s %s %s: rules: %w", fam, t.Name, c.Name, err)
			}
			for _, r := range rules {
				s, err := printRule(t.Family, r.Exprs)
				if err != nil {
					return "", fmt.Errorf("nftables chain %s %s %s, rule handle %d: %w", fam, t.Name, c.Name, r.Handle, err)
				}
				fmt.Fprintf(&b, "\t\t%s\n", s)
			}
			b.WriteString("\t}\n")
		}
		b.WriteString("}\n")
	}
	return b.String(), nil
}

func priorityText(p int32) string {
	for _, n := range priorityNames {
		switch {
		case p == n.val:
			return n.name
		case p > n.val && p-n.val <= 10:
			return fmt.Sprintf("%s + %d", n.name, p-n.val)
		case p < n.val && n.val-p <= 10:
			return fmt.Sprintf("%s - %d", n.name, n.val-p)
		}
	}
	return strconv.Itoa(int(p))
}

// ct states (include/uapi/linux/netfilter/nf_conntrack_common.h).
var ctStates = []struct {
	name string
	bit  uint32
}{{"invalid", 1}, {"established", 2}, {"related", 4}, {"new", 8}, {"untracked", 64}}

var cmpOps = map[expr.CmpOp]string{expr.CmpOpEq: "", expr.CmpOpNeq: "!= ", expr.CmpOpLt: "< ", expr.CmpOpLte: "<= ", expr.CmpOpGt: "> ", expr.CmpOpGte: ">= "}

var l4Names = map[byte]string{6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", 132: "sctp"}

// printRule prints the expressions of a rule as nft does, for the
// statements this file knows; nft hides the dependencies it adds
// (meta nfproto before ip saddr in an inet table, meta l4proto before
// tcp dport), so does this.
func printRule(fam nftables.TableFamily, exprs []expr.Any) (string, error) {
	var out []string
	var l4 string // the last l4proto match, for the transport header
	for i := 0; i < len(exprs); i++ {
		next := func(k int) expr.Any {
			if i+k < len(exprs) {
				return exprs[i+k]
			}
			return nil
		}
		switch e := exprs[i].(type) {
		case *expr.Meta:
			c, ok := next(1).(*expr.Cmp)
			if !ok {
				return "", fmt.Errorf("meta key %d without a comparison: %w", e.Key, ErrNotSupported)
			}
			op := cmpOps[c.Op]
			i++
			switch e.Key {
			case expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME:
				name := ifname(c.Data)
				kw := map[expr.MetaKey]string{expr.MetaKeyIIFNAME: "iifname", expr.MetaKeyOIFNAME: "oifname"}[e.Key]
				out = append(out, fmt.Sprintf("%s %s%q", kw, op, name))
			case expr.MetaKeyMARK:
				if len(c.Data) != 4 {
					return "", fmt.Errorf("meta mark of %d bytes: %w", len(c.Data), ErrNotSupported)
				}
				out = append(out, fmt.Sprintf("meta mark %s0x%08x", op, binary.NativeEndian.Uint32(c.Data)))
			case expr.MetaKeyNFPROTO:
				if len(c.Data) != 1 || (c.Data[0] != 2 && c.Data[0] != 10) {
					return "", fmt.Errorf("meta nfproto %v: %w", c.Data, ErrNotSupported)
				}
				if p, ok := next(1).(*expr.Payload); ok && p.Base == expr.PayloadBaseNetworkHeader && op == "" {
					continue // nft's dependency of ip/ip6 matches
				}
				out = append(out, fmt.Sprintf("meta nfproto %s%s", op, map[byte]string{2: "ipv4", 10: "ipv6"}[c.Data[0]]))
			case expr.MetaKeyL4PROTO:
				if len(c.Data) != 1 {
					return "", fmt.Errorf("meta l4proto of %d bytes: %w", len(c.Data), ErrNotSupported)
				}
				if p, ok := next(1).(*expr.Payload); ok && p.Base == expr.PayloadBaseTransportHeader && op == "" && l4Names[c.Data[0]] != "" {
					l4 = l4Names[c.Data[0]]
					continue
				}
				out = append(out, fmt.Sprintf("meta l4proto %s%s", op, protoName(c.Data[0])))
			default:
				return "", fmt.Errorf("meta key %d: %w", e.Key, ErrNotSupported)
			}
		case *expr.Payload:
			if e.OperationType != expr.PayloadLoad {
				return "", fmt.Errorf("payload write: %w", ErrNotSupported)
			}
			var mask []byte
			k := 1
			if bw, ok := next(1).(*expr.Bitwise); ok {
				if !allZero(bw.Xor) {
					return "", fmt.Errorf("bitwise with xor: %w", ErrNotSupported)
				}
				mask, k = bw.Mask, 2
			}
			c, ok := next(k).(*expr.Cmp)
			if !ok {
				return "", fmt.Errorf("payload without a comparison: %w", ErrNotSupported)
			}
			i += k
			s, err := printPayload(fam, e, mask, c, l4)
			if err != nil {
				return "", err
			}
			out = append(out, s)
		case *expr.Ct:
			bw, ok1 := next(1).(*expr.Bitwise)
			c, ok2 := next(2).(*expr.Cmp)
			if e.Key != expr.CtKeySTATE || !ok1 || !ok2 || c.Op != expr.CmpOpNeq || !allZero(c.Data) || len(bw.Mask) != 4 {
				return "", fmt.Errorf("ct key %d: %w", e.Key, ErrNotSupported)
			}
			i += 2
			m := binary.NativeEndian.Uint32(bw.Mask)
			var names []string
			for _, s := range ctStates {
				if m&s.bit != 0 {
					names = append(names, s.name)
					m &^= s.bit
				}
			}
			if m != 0 {
				return "", fmt.Errorf("ct state bits %#x: %w", m, ErrNotSupported)
			}
			out = append(out, "ct state "+strings.Join(names, ","))
		case *expr.Counter:
			out = append(out, fmt.Sprintf("counter packets %d bytes %d", e.Packets, e.Bytes))
		case *expr.Verdict:
			switch e.Kind {
			case expr.VerdictAccept:
				out = append(out, "accept")
			case expr.VerdictDrop:
				out = append(out, "drop")
			case expr.VerdictReturn:
				out = append(out, "return")
			case expr.VerdictJump:
				out = append(out, "jump "+e.Chain)
			case expr.VerdictGoto:
				out = append(out, "goto "+e.Chain)
			default:
				return "", fmt.Errorf("verdict %d: %w", e.Kind, ErrNotSupported)
			}
		default:
			return "", fmt.Errorf("expression %T: %w", e, ErrNotSupported)
		}
	}
	return strings.Join(out, " "), nil
}

func protoName(p byte) string {
	if n := l4Names[p]; n != "" {
		return n
	}
	return strconv.Itoa(int(p))
}

func ifname(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return string(b[:i])
	}
	return string(b) + "*" // no terminator: a prefix, nft's wildcard
}

func allZero(b []byte) bool { return !slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) }

// network header fields nft names, by family, offset and length.
type field struct {
	proto, name string
	off, len    uint32
}

var netFields = []field{
	{"ip", "saddr", 12, 4}, {"ip", "daddr", 16, 4}, {"ip", "protocol", 9, 1},
	{"ip6", "saddr", 8, 16}, {"ip6", "daddr", 24, 16}, {"ip6", "nexthdr", 6, 1},
}

func printPayload(fam nftables.TableFamily, p *expr.Payload, mask []byte, c *expr.Cmp, l4 string) (string, error) {
	op := cmpOps[c.Op]
	switch p.Base {
	case expr.PayloadBaseNetworkHeader:
		for _, f := range netFields {
			// nft loads only the bytes a prefix covers: ip saddr
			// 10.0.0.0/8 is one byte at offset 12.
			if f.off != p.Offset || p.Len > f.len || (p.Len != f.len && f.len == 1) {
				continue
			}
			if fam == nftables.TableFamilyIPv4 && f.proto != "ip" || fam == nftables.TableFamilyIPv6 && f.proto != "ip6" {
				continue
			}
			if f.len == 1 {
				if mask != nil || len(c.Data) != 1 {
					break
				}
				return fmt.Sprintf("%s %s %s%s", f.proto, f.name, op, protoName(c.Data[0])), nil
			}
			if len(c.Data) != int(p.Len) {
				break
			}
			a, ok := netip.AddrFromSlice(append(slices.Clone(c.Data), make([]byte, f.len-p.Len)...))
			if !ok {
				break
			}
			s := a.String()
			bits := int(p.Len) * 8
			if mask != nil {
				if bits = prefixLen(mask); bits < 0 {
					return "", fmt.Errorf("%s %s with mask %x: %w", f.proto, f.name, mask, ErrNotSupported)
				}
			}
			if bits != a.BitLen() {
				s = netip.PrefixFrom(a, bits).String()
			}
			return fmt.Sprintf("%s %s %s%s", f.proto, f.name, op, s), nil
		}
		// In an inet table nft tells ip from ip6 by the nfproto match
		// before: try each.
		if fam == nftables.TableFamilyINet || fam == nftables.TableFamilyBridge || fam == nftables.TableFamilyNetdev {
			return "", fmt.Errorf("network header offset %d length %d: %w", p.Offset, p.Len, ErrNotSupported)
		}
	case expr.PayloadBaseTransportHeader:
		if l4 != "tcp" && l4 != "udp" || mask != nil || p.Len != 2 || len(c.Data) != 2 {
			break
		}
		name := map[uint32]string{0: "sport", 2: "dport"}[p.Offset]
		if name == "" {
			break
		}
		return fmt.Sprintf("%s %s %s%d", l4, name, op, binary.BigEndian.Uint16(c.Data)), nil
	}
	return "", fmt.Errorf("payload base %d offset %d length %d: %w", p.Base, p.Offset, p.Len, ErrNotSupported)
}

func prefixLen(mask []byte) int {
	n, ended := 0, false
	for _, b := range mask {
		for i := 7; i >= 0; i-- {
			if b&(1<<i) != 0 {
				if ended {
					return -1
				}
				n++
			} else {
				ended = true
			}
		}
	}
	return n
}

// readNftables reads the ruleset image; criu writes none without
// libnftables, and an empty one without tables.
func readNftables(dir *images.Dir, id uint32) (*ruleset, error) {
	name := nftName(id)
	if !dir.Has(name) {
		return nil, nil
	}
	f, err := dir.OpenRaw(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	rs, err := parseRuleset(string(b))
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	return rs, nil
}

// restoreNftables makes the ruleset in the calling thread's namespace,
// in one transaction.
func restoreNftables(rs *ruleset, id uint32) error {
	if rs == nil || len(rs.tables) == 0 {
		return nil
	}
	nft, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	for _, t := range rs.tables {
		nft.AddTable(t.t)
		for _, c := range t.chains {
			nft.AddChain(c.c)
		}
		for _, c := range t.chains {
			for _, r := range c.rules {
				nft.AddRule(&nftables.Rule{Table: t.t, Chain: c.c, Exprs: r})
			}
		}
	}
	if err := nft.Flush(); err != nil {
		return fmt.Errorf("restore the nftables ruleset of %s: %w", nftName(id), err)
	}
	return nil
}
