package main

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/stasis-cr/stasis/internal/testutil/require"
)

// parseOnly parses args for the subcommand name as Execute would, up to
// and including the argument check, without running it.
func parseOnly(t *testing.T, name string, args ...string) error {
	t.Helper()
	root := newRoot(nil)
	var cmd *cobra.Command
	for _, c := range root.Commands() {
		if c.Name() == name {
			cmd = c
		}
	}
	if cmd == nil {
		t.Fatalf("no subcommand %s", name)
	}
	if err := cmd.ParseFlags(normalizeArgs(args)); err != nil {
		return err
	}
	return cmd.ValidateArgs(cmd.Flags().Args())
}

// TestCRIUOptionsTable: every long option of `criu --help` is in the table.
func TestCRIUOptionsTable(t *testing.T) {
	criu := require.CRIU(t)
	out, _ := exec.Command(criu, "--help").CombinedOutput()
	known := map[string]bool{}
	for _, o := range criuOptions {
		known[o.name] = true
	}
	names := regexp.MustCompile(`--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)`).FindAllStringSubmatch(string(out), -1)
	if len(names) < 50 {
		t.Fatalf("criu --help names %d options", len(names))
	}
	for _, m := range names {
		n := strings.TrimPrefix(m[1], "no-")
		if m[1] == "no" { // the help's prose about --no- forms
			continue
		}
		if !known[m[1]] && !known[n] {
			t.Errorf("criu option --%s is not in criuOptions", m[1])
		}
	}
}

// TestCRIUOptionsAccepted: each criu option, in each of its spellings, is
// either taken by dump, restore and check, or refused with the one error
// that names it; never an unknown flag or a stray argument.
func TestCRIUOptionsAccepted(t *testing.T) {
	counts := map[string]int{}
	byKind := map[string][]string{}
	for _, o := range append(append([]criuOpt{}, criuOptions...), extraRefused...) {
		if cobraBuiltin[o.name] {
			counts["builtin"]++
			continue
		}
		var spellings [][]string
		switch o.arg {
		case noArg:
			spellings = [][]string{{"--" + o.name}}
		case reqArg:
			spellings = [][]string{{"--" + o.name, "1"}, {"--" + o.name + "=1"}}
		case optionalArg:
			val := "1"
			if o.name == "cpu-cap" {
				val = "fpu" // parsed by dump and restore
			}
			spellings = [][]string{{"--" + o.name}, {"--" + o.name + "=" + val}}
		}
		if o.short != "" {
			s := []string{"-" + o.short}
			if o.arg == reqArg {
				s = append(s, "1")
			}
			spellings = append(spellings, s)
		}
		if o.negatable {
			spellings = append(spellings, []string{"--no-" + o.name})
		}
		for _, cmd := range []string{"dump", "restore", "check", "pre-dump"} {
			for _, args := range spellings {
				err := parseOnly(t, cmd, args...)
				if err == nil {
					continue
				}
				msg := err.Error()
				if strings.Contains(msg, "unknown") || !strings.Contains(msg, "not implemented yet (criu 4.2 option") {
					t.Errorf("%s %v: %v", cmd, args, err)
				}
			}
		}
		kind := "refused"
		root := newRoot(nil)
		for _, name := range []string{"dump", "restore", "check"} {
			c, _, _ := root.Find([]string{name})
			fl := c.Flags().Lookup(o.name)
			switch {
			case fl == nil:
				t.Errorf("%s has no --%s", name, o.name)
			case fl.Usage == refusedUsage:
			case strings.HasPrefix(fl.Usage, hintUsage):
				if kind == "refused" {
					kind = "hint"
				}
			default:
				kind = "implemented"
			}
		}
		counts[kind]++
		byKind[kind] = append(byKind[kind], o.name)
	}
	for k, names := range byKind {
		t.Logf("%s: %s", k, strings.Join(names, " "))
	}
	t.Logf("criu options (implemented: by dump, restore or check): %v", counts)
	// The refusal names the option whatever its spelling.
	for _, args := range [][]string{{"--timeout", "X", "-t", "1"}, {"--timeout=X"}} {
		err := parseOnly(t, "dump", args...)
		if err == nil || err.Error() != "dump: --timeout is not implemented yet (criu 4.2 option)" {
			t.Errorf("dump %v: %v", args, err)
		}
	}
	if err := parseOnly(t, "dump", "--cpu-cap=none", "--log-pid", "--no-display-stats", "-vvvv"); err != nil {
		t.Errorf("hints: %v", err)
	}
	if err := parseOnly(t, "restore", "--link-remap", "--skip-in-flight", "--ghost-limit", "1M"); err != nil {
		t.Errorf("dump options at restore: %v", err)
	}
	if err := parseOnly(t, "dump", "--cpu-cap=fpu"); err != nil {
		t.Errorf("--cpu-cap=fpu: %v", err)
	}
	if err := parseOnly(t, "restore", "--cpu-cap=sse"); err == nil || !strings.Contains(err.Error(), `unknown capability "sse"`) {
		t.Errorf("--cpu-cap=sse: %v", err)
	}
	if err := parseOnly(t, "dump", "--bogus"); err == nil || !strings.Contains(err.Error(), "unknown flag") {
		t.Errorf("--bogus: %v", err)
	}
}
