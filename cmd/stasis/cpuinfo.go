package main

import (
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/stasis-cr/stasis"
)

func init() { subcommands = append(subcommands, subcommand{"cpuinfo", newCPUInfoCmd}) }

// cpuCapNoArg is what pflag sets for --cpu-cap given without "=VALUE"
// (criu's optional argument: all).
const cpuCapNoArg = "\x00all"

// cpuCapFlag is criu's --cpu-cap[=CAP[,CAP]] into a CPUCaps.
type cpuCapFlag struct {
	caps *stasis.CPUCaps
	arg  string
}

func (c *cpuCapFlag) String() string {
	if c.arg == cpuCapNoArg {
		return ""
	}
	return c.arg
}
func (c *cpuCapFlag) Type() string { return "caps" }
func (c *cpuCapFlag) Set(s string) error {
	caps, err := stasis.ParseCPUCap(s, s != cpuCapNoArg)
	if err != nil {
		return err
	}
	c.arg, *c.caps = s, caps
	return nil
}

// addCPUCapFlag gives a command criu's --cpu-cap: a dump with it writes
// cpuinfo.img, a restore with it checks this CPU against the image.
func addCPUCapFlag(f *pflag.FlagSet, caps *stasis.CPUCaps) {
	fl := f.VarPF(&cpuCapFlag{caps: caps}, "cpu-cap", "",
		"dump: record the CPU (cpuinfo.img); restore, cpuinfo check: check this CPU against it for CAP[,CAP] of fpu, cpu, ins, all, none (alone: all)")
	fl.NoOptDefVal = cpuCapNoArg
}

func newCPUInfoCmd() *cobra.Command {
	var dir string
	var caps stasis.CPUCaps
	var lf logFlags
	cmd := &cobra.Command{
		Use:   "cpuinfo dump|check -D DIR [--cpu-cap[=CAP]]",
		Short: "write this CPU's description (cpuinfo.img), or check this CPU against one",
		Long: "cpuinfo dump writes cpuinfo.img into -D DIR, as criu's. cpuinfo check reads it\n" +
			"and checks this CPU against it, for the capabilities --cpu-cap names (default\n" +
			"fpu,ins; none checks all, as criu's).",
		Args: func(c *cobra.Command, args []string) error {
			switch {
			case len(args) == 0:
				return errorf("cpuinfo requires an action: dump or check")
			case len(args) > 1:
				return errorf("cpuinfo %s: one action, dump or check", args[0])
			case args[0] != "dump" && args[0] != "check":
				return errorf("unknown cpuinfo sub-command: %s", args[0])
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if dir == "" {
				dir = "."
			}
			log, closeLog, err := lf.open(dir)
			if err != nil {
				return err
			}
			defer closeLog()
			if args[0] == "dump" {
				err = stasis.CPUInfoDump(dir)
			} else {
				if !c.Flags().Changed("cpu-cap") {
					caps = stasis.CPUCapDefault
				}
				err = stasis.CPUInfoCheck(dir, caps)
			}
			if err != nil {
				if lf.file != "" {
					log.Error("cpuinfo "+args[0], "err", err)
				}
				return err
			}
			log.Info("cpuinfo "+args[0]+" done", "dir", dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&dir, "images-dir", "D", "", "directory of cpuinfo.img")
	addCPUCapFlag(f, &caps)
	lf.register(f)
	addCRIUOptions(cmd)
	return cmd
}
