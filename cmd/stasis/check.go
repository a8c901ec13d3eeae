package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/stasis-cr/stasis"
)

func init() { subcommands = append(subcommands, subcommand{"check", newCheckCmd}) }

type checkOptions struct {
	feature           string
	all, extra, exper bool
	dump              stasis.DumpOptions // --pid and the dump's flags
	refusals          refusalFlags
}

func newCheckCmd() *cobra.Command {
	var o checkOptions
	var lf logFlags
	cmd := &cobra.Command{
		Use:   "check [--feature NAME] [--pid PID [DUMP FLAGS]]",
		Short: "check that the kernel has what checkpoint/restore needs, or that a tree can be dumped",
		Long: `Probe the kernel features stasis uses and print one line per feature:
"ok", "MISSING" (required: dump or restore cannot work) or "no" (optional),
its name, what was measured and, when absent, what does not work without it.
Exits 1 if a required feature is missing; otherwise prints "Looks good."
Every probe always runs, so --all, --extra and --experimental change nothing.

--feature NAME answers criu's "criu check --feature NAME" for every name
of criu 4.2 (mnt_id, mem_dirty_track, timerfd, tcp_half_closed, ...), for
this kernel and what stasis can do with it, or one of the names printed by
stasis check: "NAME is supported" and exit 0, or "NAME is not supported:
WHY" on stderr and exit 1, as criu. --feature list prints the names.

--pid PID (or -t PID) checks whether "stasis dump -t PID" with the same flags (-j,
-l, -x, --tcp-established, --skip-in-flight, --external, --link-remap,
--ghost-limit) would succeed, without dumping: the tree is stopped for as
long as the dump's checks take, then resumed untouched, and nothing is
written. Each resource the dump would refuse is printed on a line of its
own, as the dump would say it, with the flag or fix when there is one,
and the exit status is 1; otherwise it prints "dump of pid PID (N
processes, M threads) looks possible" and exits 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, closeLog, err := lf.open("")
			if err != nil {
				return err
			}
			defer closeLog()
			out := cmd.OutOrStdout()
			if o.dump.Pid != 0 {
				return preflight(out, log, o)
			}
			for _, name := range refusalFlagNames {
				if cmd.Flags().Changed(name) {
					return errorf("check: --%s is a dump flag: it goes with --pid PID", name)
				}
			}
			if o.feature != "" {
				return checkFeature(out, cmd.ErrOrStderr(), o.feature)
			}
			fs := stasis.Check()
			for _, f := range fs {
				log.Info("kernel feature", "name", f.Name, "ok", f.OK, "detail", f.Detail, "required", f.Required)
			}
			if !printCheck(out, fs) {
				return exitError{1}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.feature, "feature", "", "check one feature by its criu or stasis name; \"list\" lists them")
	f.BoolVar(&o.all, "all", false, "accepted for criu compatibility: every probe always runs")
	f.BoolVar(&o.extra, "extra", false, "accepted for criu compatibility: every probe always runs")
	f.BoolVar(&o.exper, "experimental", false, "accepted for criu compatibility: every probe always runs")
	f.IntVar(&o.dump.Pid, "pid", 0, "check whether the tree rooted at PID can be dumped (with the dump flags given)")
	f.IntVarP(&o.dump.Pid, "tree", "t", 0, "same as --pid, as dump spells it")
	o.refusals.register(f, &o.dump)
	lf.register(f)
	return cmd
}

// printCheck writes the report and says whether every required feature is
// there.
func printCheck(w io.Writer, fs []stasis.Feature) bool {
	width := 0
	for _, f := range fs {
		width = max(width, len(f.Name))
	}
	good := true
	for _, f := range fs {
		status, tail := "ok", ""
		if !f.OK {
			status, tail = "no", " -> "+f.Impact
			if f.Since != "" {
				tail += " (kernel " + f.Since + "+)"
			}
			if f.Required {
				status, good = "MISSING", false
			}
		}
		fmt.Fprintf(w, "%-7s %-*s  %s%s\n", status, width, f.Name, f.Detail, tail)
	}
	if good {
		fmt.Fprintln(w, "Looks good.")
	} else {
		fmt.Fprintln(w, "Does not look good.")
	}
	return good
}

func checkFeature(out, errw io.Writer, name string) error {
	if name == "list" {
		fmt.Fprintln(out, strings.Join(stasis.FeatureNames(), ", "))
		return nil
	}
	supported, detail, known := stasis.CheckFeature(name)
	if !known {
		fmt.Fprintf(errw, "Unknown feature %s\n", name)
		return exitError{1}
	}
	if !supported {
		// criu says why on stderr, stdout stays empty.
		fmt.Fprintf(errw, "%s is not supported: %s\n", name, detail)
		return exitError{1}
	}
	fmt.Fprintf(out, "%s is supported\n", name)
	return nil
}

// preflight prints what a dump of o.dump.Pid would refuse, or that it
// looks possible.
func preflight(out io.Writer, log *slog.Logger, o checkOptions) error {
	if o.dump.Pid < 0 {
		return errorf("check: --pid %d: not a pid", o.dump.Pid)
	}
	if err := o.refusals.apply(&o.dump); err != nil {
		return errorf("check: %v", err)
	}
	o.dump.Log = log
	// It holds the tree as a dump does: a signal resumes it first.
	ctx, release := interruptible()
	defer release()
	r, err := stasis.PreflightContext(ctx, o.dump)
	if err != nil {
		return err
	}
	size := fmt.Sprintf("%d %s, %d %s", r.Processes, plural(r.Processes, "process", "processes"), r.Threads, plural(r.Threads, "thread", "threads"))
	if len(r.Refused) == 0 {
		fmt.Fprintf(out, "dump of pid %d (%s) looks possible\n", o.dump.Pid, size)
		return nil
	}
	fmt.Fprintf(out, "dump of pid %d (%s) would fail, %d %s:\n", o.dump.Pid, size, len(r.Refused), plural(len(r.Refused), "problem", "problems"))
	for _, e := range r.Refused {
		log.Info("dump would fail", "err", e)
		fmt.Fprintf(out, "  %s\n", e)
	}
	return exitError{1}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
