package netns

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// The parser of what nft.go prints (and nft itself prints for the same
// objects): `nft list ruleset` text, one table, chain header or rule a
// line.

type ruleset struct{ tables []*nftTable }

type nftTable struct {
	t      *nftables.Table
	chains []*nftChain
}

type nftChain struct {
	c     *nftables.Chain
	rules [][]expr.Any
}

// tokens splits a line into words, quoted strings and the punctuation
// nft's syntax uses; a # starts a comment.
func tokens(line string) ([]string, error) {
	var out []string
	for i := 0; i < len(line); {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case c == '#':
			return out, nil
		case c == '{' || c == '}' || c == ';':
			out = append(out, string(c))
			i++
		case c == '"':
			j := strings.IndexByte(line[i+1:], '"')
			if j < 0 {
				return nil, fmt.Errorf("unterminated string")
			}
			out = append(out, line[i:i+j+2])
			i += j + 2
		default:
			j := i
			for j < len(line) && !strings.ContainsRune(" \t\r{};\"#", rune(line[j])) {
				j++
			}
			out = append(out, line[i:j])
			i = j
		}
	}
	return out, nil
}

var familyByName = map[string]nftables.TableFamily{}

func init() {
	for f, n := range familyNames {
		familyByName[n] = f
	}
}

func parseRuleset(text string) (*ruleset, error) {
	rs := &ruleset{}
	var table *nftTable
	var chain *nftChain
	skip := false // inside a lock table
	for n, line := range strings.Split(text, "\n") {
		toks, err := tokens(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w: %w", n+1, err, ErrBadImage)
		}
		if len(toks) == 0 {
			continue
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("line %d %q: %s", n+1, strings.TrimSpace(line), fmt.Sprintf(format, args...))
		}
		switch {
		case table == nil:
			if len(toks) != 4 || toks[0] != "table" || toks[3] != "{" {
				return nil, fmt.Errorf("%w: %w", fail("want table FAMILY NAME {"), ErrBadImage)
			}
			fam, ok := familyByName[toks[1]]
			if !ok {
				return nil, fmt.Errorf("%w: %w", fail("family %s", toks[1]), ErrNotSupported)
			}
			table = &nftTable{t: &nftables.Table{Name: toks[2], Family: fam}}
			skip = isLockTable(toks[2])
		case chain == nil:
			switch {
			case len(toks) == 1 && toks[0] == "}":
				if !skip {
					rs.tables = append(rs.tables, table)
				}
				table = nil
			case len(toks) == 3 && toks[0] == "chain" && toks[2] == "{":
				chain = &nftChain{c: &nftables.Chain{Name: toks[1], Table: table.t}}
				table.chains = append(table.chains, chain)
			case skip:
			default:
				return nil, fmt.Errorf("%w: restoring it is %w yet (tables of chains and rules only)", fail("table %s", table.t.Name), ErrNotSupported)
			}
		default:
			switch {
			case len(toks) == 1 && toks[0] == "}":
				chain = nil
			case skip:
			case toks[0] == "type":
				if err := parseChainHeader(chain.c, toks); err != nil {
					return nil, fmt.Errorf("%w: %w", fail("chain %s", chain.c.Name), err)
				}
			default:
				exprs, err := parseRule(table.t.Family, toks)
				if err != nil {
					return nil, fmt.Errorf("%w: %w", fail("chain %s %s", table.t.Name, chain.c.Name), err)
				}
				chain.rules = append(chain.rules, exprs)
			}
		}
	}
	if table != nil {
		return nil, fmt.Errorf("table %s not closed: %w", table.t.Name, ErrBadImage)
	}
	return rs, nil
}

// parseChainHeader parses "type T hook H priority P; policy X;".
func parseChainHeader(c *nftables.Chain, toks []string) error {
	for i := 0; i < len(toks); {
		switch toks[i] {
		case ";":
			i++
		case "type":
			if i+1 >= len(toks) {
				return fmt.Errorf("type: %w", ErrBadImage)
			}
			c.Type = nftables.ChainType(toks[i+1])
			i += 2
		case "hook":
			if i+1 >= len(toks) {
				return fmt.Errorf("hook: %w", ErrBadImage)
			}
			found := false
			for h, n := range hookNames {
				if n == toks[i+1] {
					c.Hooknum = nftables.ChainHookRef(h)
					found = true
				}
			}
			if !found {
				return fmt.Errorf("hook %s: %w", toks[i+1], ErrNotSupported)
			}
			i += 2
		case "priority":
			j := i + 1
			for j < len(toks) && toks[j] != ";" {
				j++
			}
			p, err := parsePriority(toks[i+1 : j])
			if err != nil {
				return err
			}
			c.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(p))
			i = j
		case "policy":
			if i+1 >= len(toks) {
				return fmt.Errorf("policy: %w", ErrBadImage)
			}
			var p nftables.ChainPolicy
			switch toks[i+1] {
			case "accept":
				p = nftables.ChainPolicyAccept
			case "drop":
				p = nftables.ChainPolicyDrop
			default:
				return fmt.Errorf("policy %s: %w", toks[i+1], ErrBadImage)
			}
			c.Policy = &p
			i += 2
		default:
			return fmt.Errorf("%s: %w", toks[i], ErrNotSupported)
		}
	}
	return nil
}

func parsePriority(toks []string) (int32, error) {
	if len(toks) == 0 {
		return 0, fmt.Errorf("priority: %w", ErrBadImage)
	}
	var base int32
	if n, err := strconv.ParseInt(toks[0], 10, 32); err == nil {
		base = int32(n)
	} else {
		found := false
		for _, p := range priorityNames {
			if p.name == toks[0] {
				base, found = p.val, true
			}
		}
		if !found {
			return 0, fmt.Errorf("priority %s: %w", toks[0], ErrNotSupported)
		}
	}
	if len(toks) == 3 && (toks[1] == "+" || toks[1] == "-") {
		off, err := strconv.ParseInt(toks[2], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("priority %s: %w", strings.Join(toks, " "), ErrBadImage)
		}
		if toks[1] == "-" {
			off = -off
		}
		return base + int32(off), nil
	}
	if len(toks) != 1 {
		return 0, fmt.Errorf("priority %s: %w", strings.Join(toks, " "), ErrBadImage)
	}
	return base, nil
}

// ruleParser turns the statements of one rule into expressions, adding
// the dependencies nft adds (and hides when it prints).
type ruleParser struct {
	fam   nftables.TableFamily
	toks  []string
	i     int
	exprs []expr.Any
	// nfproto and l4 are the dependencies already matched.
	nfproto byte
	l4      byte
}

func parseRule(fam nftables.TableFamily, toks []string) ([]expr.Any, error) {
	p := &ruleParser{fam: fam, toks: toks}
	for p.i < len(p.toks) {
		if err := p.statement(); err != nil {
			return nil, err
		}
	}
	return p.exprs, nil
}

func (p *ruleParser) next() (string, error) {
	if p.i >= len(p.toks) {
		return "", fmt.Errorf("statement cut short: %w", ErrBadImage)
	}
	t := p.toks[p.i]
	p.i++
	return t, nil
}

// op reads an optional comparison operator.
func (p *ruleParser) op() expr.CmpOp {
	if p.i < len(p.toks) {
		for o, s := range cmpOps {
			if s != "" && strings.TrimSpace(s) == p.toks[p.i] {
				p.i++
				return o
			}
		}
		if p.toks[p.i] == "==" {
			p.i++
		}
	}
	return expr.CmpOpEq
}

func (p *ruleParser) add(e ...expr.Any) { p.exprs = append(p.exprs, e...) }

func (p *ruleParser) cmp(op expr.CmpOp, data []byte) {
	p.add(&expr.Cmp{Op: op, Register: 1, Data: data})
}

func (p *ruleParser) needNfproto(v byte) {
	if p.fam == nftables.TableFamilyIPv4 || p.fam == nftables.TableFamilyIPv6 || p.nfproto == v {
		return
	}
	p.add(&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1})
	p.cmp(expr.CmpOpEq, []byte{v})
	p.nfproto = v
}

func (p *ruleParser) statement() error {
	kw, _ := p.next()
	switch kw {
	case "iifname", "oifname":
		op := p.op()
		v, err := p.next()
		if err != nil {
			return err
		}
		name, err := strconv.Unquote(v)
		if err != nil {
			name = v
		}
		data := append([]byte(name), 0)
		if strings.HasSuffix(name, "*") {
			data = []byte(strings.TrimSuffix(name, "*"))
		} else {
			data = append(data, make([]byte, max(0, 16-len(data)))...)
		}
		key := expr.MetaKeyIIFNAME
		if kw == "oifname" {
			key = expr.MetaKeyOIFNAME
		}
		p.add(&expr.Meta{Key: key, Register: 1})
		p.cmp(op, data)
	case "meta":
		what, err := p.next()
		if err != nil {
			return err
		}
		op := p.op()
		v, err := p.next()
		if err != nil {
			return err
		}
		switch what {
		case "mark":
			n, err := strconv.ParseUint(v, 0, 32)
			if err != nil {
				return fmt.Errorf("meta mark %s: %w", v, ErrBadImage)
			}
			p.add(&expr.Meta{Key: expr.MetaKeyMARK, Register: 1})
			p.cmp(op, binary.NativeEndian.AppendUint32(nil, uint32(n)))
		case "nfproto":
			b := map[string]byte{"ipv4": 2, "ipv6": 10}[v]
			if b == 0 {
				return fmt.Errorf("meta nfproto %s: %w", v, ErrNotSupported)
			}
			p.add(&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1})
			p.cmp(op, []byte{b})
			if op == expr.CmpOpEq {
				p.nfproto = b
			}
		case "l4proto":
			b, err := protoNumber(v)
			if err != nil {
				return err
			}
			p.add(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1})
			p.cmp(op, []byte{b})
			if op == expr.CmpOpEq {
				p.l4 = b
			}
		default:
			return fmt.Errorf("meta %s: %w", what, ErrNotSupported)
		}
	case "ip", "ip6":
		what, err := p.next()
		if err != nil {
			return err
		}
		var f *field
		for i := range netFields {
			if netFields[i].proto == kw && netFields[i].name == what {
				f = &netFields[i]
			}
		}
		if f == nil {
			return fmt.Errorf("%s %s: %w", kw, what, ErrNotSupported)
		}
		op := p.op()
		v, err := p.next()
		if err != nil {
			return err
		}
		p.needNfproto(map[string]byte{"ip": 2, "ip6": 10}[kw])
		load := &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.off, Len: f.len}
		if f.len == 1 {
			b, err := protoNumber(v)
			if err != nil {
				return err
			}
			p.add(load)
			p.cmp(op, []byte{b})
			return nil
		}
		pfx, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return fmt.Errorf("%s %s %s: %w", kw, what, v, ErrBadImage)
			}
			pfx = netip.PrefixFrom(a, a.BitLen())
		}
		if pfx.Addr().BitLen() != int(f.len)*8 {
			return fmt.Errorf("%s %s %s: %w", kw, what, v, ErrBadImage)
		}
		p.add(load)
		if pfx.Bits() != pfx.Addr().BitLen() {
			mask := make([]byte, f.len)
			for i := 0; i < pfx.Bits(); i++ {
				mask[i/8] |= 0x80 >> (i % 8)
			}
			p.add(&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: f.len, Mask: mask, Xor: make([]byte, f.len)})
		}
		p.cmp(op, pfx.Masked().Addr().AsSlice())
	case "tcp", "udp":
		what, err := p.next()
		if err != nil {
			return err
		}
		off := map[string]uint32{"sport": 0, "dport": 2}
		o, ok := off[what]
		if !ok {
			return fmt.Errorf("%s %s: %w", kw, what, ErrNotSupported)
		}
		op := p.op()
		v, err := p.next()
		if err != nil {
			return err
		}
		port, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return fmt.Errorf("%s %s %s: %w", kw, what, v, ErrNotSupported)
		}
		l4, _ := protoNumber(kw)
		if p.l4 != l4 {
			p.add(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1})
			p.cmp(expr.CmpOpEq, []byte{l4})
			p.l4 = l4
		}
		p.add(&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: o, Len: 2})
		p.cmp(op, binary.BigEndian.AppendUint16(nil, uint16(port)))
	case "ct":
		what, err := p.next()
		if err != nil {
			return err
		}
		if what != "state" {
			return fmt.Errorf("ct %s: %w", what, ErrNotSupported)
		}
		v, err := p.next()
		if err != nil {
			return err
		}
		var m uint32
		for _, s := range strings.Split(v, ",") {
			found := false
			for _, st := range ctStates {
				if st.name == s {
					m |= st.bit
					found = true
				}
			}
			if !found {
				return fmt.Errorf("ct state %s: %w", s, ErrNotSupported)
			}
		}
		p.add(&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binary.NativeEndian.AppendUint32(nil, m), Xor: make([]byte, 4)})
		p.cmp(expr.CmpOpNeq, make([]byte, 4))
	case "counter":
		c := &expr.Counter{}
		for p.i+1 < len(p.toks) && (p.toks[p.i] == "packets" || p.toks[p.i] == "bytes") {
			n, err := strconv.ParseUint(p.toks[p.i+1], 10, 64)
			if err != nil {
				return fmt.Errorf("counter %s %s: %w", p.toks[p.i], p.toks[p.i+1], ErrBadImage)
			}
			if p.toks[p.i] == "packets" {
				c.Packets = n
			} else {
				c.Bytes = n
			}
			p.i += 2
		}
		p.add(c)
	case "accept":
		p.add(&expr.Verdict{Kind: expr.VerdictAccept})
	case "drop":
		p.add(&expr.Verdict{Kind: expr.VerdictDrop})
	case "return":
		p.add(&expr.Verdict{Kind: expr.VerdictReturn})
	case "jump", "goto":
		c, err := p.next()
		if err != nil {
			return err
		}
		k := expr.VerdictJump
		if kw == "goto" {
			k = expr.VerdictGoto
		}
		p.add(&expr.Verdict{Kind: k, Chain: c})
	default:
		return fmt.Errorf("statement %q: %w", kw, ErrNotSupported)
	}
	return nil
}

func protoNumber(v string) (byte, error) {
	for n, s := range l4Names {
		if s == v {
			return n, nil
		}
	}
	n, err := strconv.ParseUint(v, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("protocol %s: %w", v, ErrNotSupported)
	}
	return byte(n), nil
}
