package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/stasis-cr/stasis"
)

// optArg says whether a criu option takes an argument, as criu's
// getopt_long table does: an optional argument only comes as --flag=value.
type optArg int

const (
	noArg optArg = iota
	reqArg
	optionalArg
)

// criuOpt is one long option of criu 4.2 (from `criu --help` and what
// criu's parser accepts). negatable options also come as --no-NAME.
type criuOpt struct {
	name      string
	short     string
	arg       optArg
	negatable bool
}

// criuOptions is every option criu 4.2 accepts on its command line. criu
// takes them all whatever the command; so do dump, pre-dump, restore and
// check here: an option a subcommand does not implement is refused by name.
var criuOptions = []criuOpt{
	{"tree", "t", reqArg, false},
	{"leave-stopped", "s", noArg, false},
	{"leave-running", "R", noArg, false},
	{"restore-detached", "d", noArg, true},
	{"restore-sibling", "S", noArg, true},
	{"daemon", "d", noArg, true},
	{"images-dir", "D", reqArg, false},
	{"work-dir", "W", reqArg, false},
	{"log-file", "o", reqArg, false},
	{"join-ns", "J", reqArg, false},
	{"root", "r", reqArg, false},
	{"ext-unix-sk", "x", optionalArg, false},
	{"help", "h", noArg, false},
	{"tcp-established", "", noArg, true},
	{"close", "", reqArg, false},
	{"log-pid", "", noArg, true},
	{"version", "V", noArg, false},
	{"evasive-devices", "", noArg, true},
	{"pidfile", "", reqArg, false},
	{"veth-pair", "", reqArg, false},
	{"action-script", "", reqArg, false},
	{"link-remap", "", noArg, true},
	{"shell-job", "j", noArg, true},
	{"file-locks", "l", noArg, true},
	{"page-server", "", noArg, true},
	{"address", "", reqArg, false},
	{"port", "", reqArg, false},
	{"prev-images-dir", "", reqArg, false},
	{"ms", "", noArg, false},
	{"track-mem", "", noArg, true},
	{"auto-dedup", "", noArg, true},
	{"libdir", "L", reqArg, false},
	{"cpu-cap", "", optionalArg, false},
	{"force-irmap", "", noArg, true},
	{"ext-mount-map", "M", reqArg, false},
	{"exec-cmd", "", noArg, false},
	{"manage-cgroups", "", optionalArg, false},
	{"cgroup-root", "", reqArg, false},
	{"inherit-fd", "", reqArg, false},
	{"feature", "", reqArg, false},
	{"skip-mnt", "", reqArg, false},
	{"enable-fs", "", reqArg, false},
	{"enable-external-sharing", "", noArg, false},
	{"enable-external-masters", "", noArg, false},
	{"freeze-cgroup", "", reqArg, false},
	{"ghost-limit", "", reqArg, false},
	{"irmap-scan-path", "", reqArg, false},
	{"lsm-profile", "", reqArg, false},
	{"timeout", "", reqArg, false},
	{"external", "", reqArg, false},
	{"empty-ns", "", reqArg, false},
	{"lazy-pages", "", noArg, false},
	{"extra", "", noArg, true},
	{"experimental", "", noArg, true},
	{"all", "", noArg, true},
	{"cgroup-props", "", reqArg, false},
	{"cgroup-props-file", "", reqArg, false},
	{"cgroup-dump-controller", "", reqArg, false},
	{"skip-in-flight", "", noArg, true},
	{"deprecated", "", noArg, true},
	{"display-stats", "", noArg, true},
	{"weak-sysctls", "", noArg, true},
	{"status-fd", "", reqArg, false},
	{"tcp-close", "", noArg, true},
	{"verbosity", "v", optionalArg, false},
	{"ps-socket", "", reqArg, false},
	{"stream", "", noArg, true},
	{"config", "", reqArg, false},
	{"no-default-config", "", noArg, false},
	{"tls-cacert", "", reqArg, false},
	{"tls-cacrl", "", reqArg, false},
	{"tls-cert", "", reqArg, false},
	{"tls-key", "", reqArg, false},
	{"tls", "", noArg, true},
	{"tls-no-cn-verify", "", noArg, false},
	{"cgroup-yard", "", reqArg, false},
	{"pre-dump-mode", "", reqArg, false},
	{"file-validation", "", reqArg, false},
	{"skip-file-rwx-check", "", noArg, true},
	{"lsm-mount-context", "", reqArg, false},
	{"network-lock", "", reqArg, false},
	{"mntns-compat-mode", "", noArg, true},
	{"unprivileged", "", noArg, true},
	{"ghost-fiemap", "", noArg, true},
	{"allow-uprobes", "", noArg, true},
}

// extraRefused are options runtimes pass (through RPC) that criu's command
// line does not have; they are refused by name all the same.
var extraRefused = []criuOpt{
	{"orphan-pts-master", "", noArg, false},
	{"auto-ext-mnt", "", noArg, false},
}

// hintOptions are criu options that change nothing in what stasis does, so
// accepting them honours them; the value says why.
var hintOptions = map[string]string{
	"log-pid":      "stasis writes one log, its tasks log nothing",
	"ghost-fiemap": "stasis copies unlinked files' contents whatever their holes",
	"force-irmap":  "a hint to resolve inotify watch names, which stasis does when it can",
	"deprecated":   "allows deprecated features, of which stasis has none",
	"extra":        "check runs every probe",
	"experimental": "check runs every probe",
	"all":          "check runs every probe",
	"cpu-cap":      "only dump, restore and cpuinfo record or check the CPU, as criu's",
}

// commandHints are dump options that criu takes at restore too, where
// they change nothing (what they chose is in the images).
var commandHints = map[string]map[string]string{
	"restore": {
		"link-remap":      "linked-again files are reopened from the images, flag or not",
		"skip-in-flight":  "connections not yet accepted were not dumped",
		"ghost-limit":     "the dump's limit: the images hold what was copied",
		"evasive-devices": "a device is opened by the path the images name",
		// The mount image says how each mount is made.
		"enable-fs":               "the images say how each mount is made",
		"enable-external-sharing": "the images say how each mount is made",
		"enable-external-masters": "the images say how each mount is made",
		// What they chose is in cgroup.img.
		"cgroup-props":           "the dump's: cgroup.img holds the properties it recorded",
		"cgroup-props-file":      "the dump's: cgroup.img holds the properties it recorded",
		"cgroup-dump-controller": "the dump's: cgroup.img holds the controllers it recorded",
		"freeze-cgroup":          "the dump's: a frozen cgroup is frozen again from cgroup.img",
	},
}

// cobraBuiltin are handled by cobra itself (help on every command, version
// on the root).
var cobraBuiltin = map[string]bool{"help": true, "version": true}

// criuCommands are the subcommands that take criu's options.
var criuCommands = map[string]bool{"dump": true, "pre-dump": true, "restore": true, "check": true, "page-server": true}

const (
	refusedUsage = "not implemented yet"
	hintUsage    = "accepted for criu compatibility: changes nothing"
	negateUsage  = "criu's negation"
)

// addRefused registers a criu option stasis does not implement: parsed
// with its argument as criu parses it, so that the error names it.
func addRefused(f *pflag.FlagSet, o criuOpt) {
	if f.Lookup(o.name) != nil {
		return
	}
	short := o.short
	if short != "" && f.ShorthandLookup(short) != nil {
		short = ""
	}
	f.StringP(o.name, short, "", refusedUsage)
	fl := f.Lookup(o.name)
	switch o.arg {
	case noArg:
		fl.NoOptDefVal = "true"
	case optionalArg:
		fl.NoOptDefVal = "(default)"
	}
	fl.Hidden = true
}

// negation is --no-NAME: it sets NAME's bool flag false; for an option
// stasis refuses or takes as a hint, off is what stasis does already.
type negation struct {
	f    *pflag.FlagSet
	name string
}

func (n negation) String() string   { return "false" }
func (n negation) Type() string     { return "bool" }
func (n negation) Set(string) error { return n.apply() }

func (n negation) apply() error {
	fl := n.f.Lookup(n.name)
	if fl == nil || fl.Value.Type() != "bool" {
		return nil
	}
	return fl.Value.Set("false")
}

// addCRIUOptions makes cmd accept every criu 4.2 option: those it
// implements as they are, hints as no-ops, the rest refused by name before
// anything else is looked at (an argument of a refused option must not be
// taken for a stray positional argument).
func addCRIUOptions(cmd *cobra.Command) {
	f := cmd.Flags()
	if cmd.Name() == "dump" || cmd.Name() == "restore" {
		addDisplayStats(cmd)
	}
	addConfigFlags(f)
	for _, o := range append(append([]criuOpt{}, criuOptions...), extraRefused...) {
		if cobraBuiltin[o.name] {
			continue
		}
		if f.Lookup(o.name) == nil {
			why, ok := commandHints[cmd.Name()][o.name]
			if !ok {
				why, ok = hintOptions[o.name]
			}
			if ok {
				addRefused(f, o)
				fl := f.Lookup(o.name)
				fl.Usage = hintUsage + " (" + why + ")"
			} else {
				addRefused(f, o)
			}
		}
		if o.negatable && f.Lookup("no-"+o.name) == nil {
			fl := f.VarPF(negation{f, o.name}, "no-"+o.name, "", negateUsage)
			fl.NoOptDefVal = "true"
			fl.Hidden = true
		}
	}
	prev := cmd.Args
	cmd.Args = func(c *cobra.Command, args []string) error {
		if err := refuseCRIUOptions(c); err != nil {
			return err
		}
		if prev == nil {
			return nil
		}
		return prev(c, args)
	}
}

// refuseCRIUOptions returns one error naming the criu options given that
// stasis does not implement.
func refuseCRIUOptions(cmd *cobra.Command) error {
	var set []string
	cmd.Flags().Visit(func(fl *pflag.Flag) {
		switch {
		case fl.Usage == refusedUsage:
			set = append(set, "--"+fl.Name)
		}
	})
	switch len(set) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("%s: %s is not implemented yet (criu 4.2 option)", cmd.Name(), set[0])
	}
	return fmt.Errorf("%s: %s are not implemented yet (criu 4.2 options)", cmd.Name(), strings.Join(set, ", "))
}

// addDisplayStats gives dump and restore criu's --display-stats: once the
// operation is over (for a restore without -d, once the tree has exited),
// the stats image it wrote is printed as criu prints it.
func addDisplayStats(cmd *cobra.Command) {
	var display bool
	cmd.Flags().BoolVar(&display, "display-stats", false, "print the dump or restore stats, as criu")
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		err := run(c, args)
		var ee exitError
		if !display || err != nil && !errors.As(err, &ee) {
			return err
		}
		work := c.Flags().Lookup("work-dir").Value.String()
		if work == "" {
			work = c.Flags().Lookup("images-dir").Value.String()
		}
		if work == "" {
			work = "."
		}
		if derr := stasis.DisplayStats(c.OutOrStdout(), work, c.Name() == "restore"); derr != nil && err == nil {
			return derr
		}
		return err
	}
}
