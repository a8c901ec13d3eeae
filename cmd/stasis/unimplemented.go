package main

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// criu flags stasis knows but does not implement yet. They are accepted by
// the parser so that the error can say exactly that, instead of failing
// as unknown or, worse, being ignored.
var (
	commonUnimplemented = []string{
		"lazy-pages", "page-server", "address", "port",
		"auto-dedup", "timeout",
		"lsm-profile", "lsm-mount-context",
	}
	dumpUnimplemented    = append([]string{"root", "irmap-scan-path", "stream"}, commonUnimplemented...)
	restoreUnimplemented = append([]string{"exec-cmd", "auto-ext-mnt"}, commonUnimplemented...)
)

func addUnimplemented(f *pflag.FlagSet, names []string) {
	for _, n := range names {
		addRefused(f, lookupCRIUOpt(n))
	}
}

// lookupCRIUOpt finds name among criu's options (and those runtimes pass).
func lookupCRIUOpt(name string) criuOpt {
	for _, o := range append(append([]criuOpt{}, criuOptions...), extraRefused...) {
		if o.name == name {
			return o
		}
	}
	return criuOpt{name: name}
}

func rejectUnimplemented(cmd *cobra.Command) error { return refuseCRIUOptions(cmd) }

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// verbosityArg matches criu's -vN, which pflag's count flags do not parse.
var verbosityArg = regexp.MustCompile(`^-v([0-9])$`)

// normalizeArgs rewrites criu spellings pflag cannot parse.
func normalizeArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		if m := verbosityArg.FindStringSubmatch(a); m != nil {
			a = "--verbosity=" + m[1]
		}
		out = append(out, a)
	}
	return out
}

// parseSize parses a size as criu does: a number with an optional K, M or
// G suffix (powers of 1024).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("bad size %q: want a number with an optional K, M or G suffix", s)
	}
	return n * mult, nil
}
