package netns

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/nftables"
)

// criu42Ruleset is what criu 4.2 wrote in nftables-ID.img for a
// namespace locked by its dump: the namespace's table and criu's lock.
const criu42Ruleset = `table inet t9 {
	chain in {
		type filter hook input priority filter; policy accept;
		tcp dport 9999 counter packets 0 bytes 0 drop
		ip saddr 10.0.0.0/8 iifname "eth0" ct state established,related accept
	}
}
table inet CRIU-68a090db-1215-498c-a7 {
	chain output {
		type filter hook output priority filter; policy drop;
		meta mark 0x0000c114 accept
	}

	chain input {
		type filter hook input priority filter; policy drop;
		meta mark 0x0000c114 accept
	}
}
`

// TestRulesetRoundTrip: criu's text parses (its lock table left out),
// and the expressions print back as nft prints them.
func TestRulesetRoundTrip(t *testing.T) {
	rs, err := parseRuleset(criu42Ruleset)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.tables) != 1 || rs.tables[0].t.Name != "t9" || len(rs.tables[0].chains) != 1 {
		t.Fatalf("parsed %+v, want table t9 with one chain", rs.tables)
	}
	c := rs.tables[0].chains[0]
	if c.c.Hooknum == nil || *c.c.Hooknum != *nftables.ChainHookInput || *c.c.Priority != 0 || *c.c.Policy != nftables.ChainPolicyAccept {
		t.Errorf("chain header %+v", c.c)
	}
	want := strings.Split(strings.TrimSpace(criu42Ruleset), "\n")[3:5]
	for i, r := range c.rules {
		got, err := printRule(nftables.TableFamilyINet, r)
		if err != nil {
			t.Fatalf("rule %d: %v", i, err)
		}
		if got != strings.TrimSpace(want[i]) {
			t.Errorf("rule %d printed %q, want %q", i, got, strings.TrimSpace(want[i]))
		}
	}
}

func TestRulesetStatements(t *testing.T) {
	for _, s := range []string{
		`iifname != "veth*" ip6 daddr fd00::/64 udp sport 53 accept`,
		`meta l4proto icmp counter packets 3 bytes 252 return`,
		`ip protocol tcp ip daddr 192.168.1.1 jump other`,
		`oifname "eth0" meta mark != 0x00000001 ct state new,untracked goto other`,
		`ip saddr 172.16.0.0/12 drop`,
	} {
		exprs, err := parseRule(nftables.TableFamilyINet, mustTokens(t, s))
		if err != nil {
			t.Errorf("parse %q: %v", s, err)
			continue
		}
		got, err := printRule(nftables.TableFamilyINet, exprs)
		if err != nil || got != s {
			t.Errorf("%q printed back as %q (%v)", s, got, err)
		}
	}
}

func mustTokens(t *testing.T, s string) []string {
	t.Helper()
	toks, err := tokens(s)
	if err != nil {
		t.Fatal(err)
	}
	return toks
}

// TestRulesetRefused: what the printer does not know is refused by name,
// a broken text as a bad image.
func TestRulesetRefused(t *testing.T) {
	for text, want := range map[string]error{
		"table inet x {\n\tset s {\n\t}\n}\n":                              ErrNotSupported,
		"table inet x {\n\tchain c {\n\t\tlog prefix \"x\" drop\n\t}\n}\n": ErrNotSupported,
		"table inet x {\n":     ErrBadImage,
		"tables inet x {\n}\n": ErrBadImage,
		"table inet x {\n\tchain c {\n\t\ttcp dport\n\t}\n}\n": ErrBadImage,
	} {
		if _, err := parseRuleset(text); !errors.Is(err, want) {
			t.Errorf("parse %q: %v, want %v", text, err, want)
		}
	}
}

func TestPriorityText(t *testing.T) {
	for p, want := range map[int32]string{0: "filter", -150: "mangle", 10: "filter + 10", -305: "raw - 5", 500: "500"} {
		got := priorityText(p)
		if got != want {
			t.Errorf("priority %d: %q, want %q", p, got, want)
		}
		back, err := parsePriority(mustTokens(t, got))
		if err != nil || back != p {
			t.Errorf("priority %q parsed as %d (%v), want %d", got, back, err, p)
		}
	}
}
