package rpc

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/cpuinfo"
	"github.com/stasis-cr/stasis/internal/criuconf"
)

// Configuration files over RPC, in criu's order (criu(8), "Configuration
// files in RPC mode"): the default files (/etc/criu/default.conf,
// $HOME/.criu/default.conf, $CRIU_CONFIG_FILE) first, so that what the
// request sets wins over them; then the request's config_file (runc:
// /etc/criu/runc.conf), which wins over the request. An option becomes
// the criu_opts field it stands for, and is then served or refused as if
// the client had sent it.

// confBools are the options that set a bool field (and their no- forms).
var confBools = map[string]func(*rpc.CriuOpts) **bool{
	"leave-running":           func(o *rpc.CriuOpts) **bool { return &o.LeaveRunning },
	"leave-stopped":           func(o *rpc.CriuOpts) **bool { return &o.LeaveStopped },
	"ext-unix-sk":             func(o *rpc.CriuOpts) **bool { return &o.ExtUnixSk },
	"tcp-established":         func(o *rpc.CriuOpts) **bool { return &o.TcpEstablished },
	"evasive-devices":         func(o *rpc.CriuOpts) **bool { return &o.EvasiveDevices },
	"shell-job":               func(o *rpc.CriuOpts) **bool { return &o.ShellJob },
	"file-locks":              func(o *rpc.CriuOpts) **bool { return &o.FileLocks },
	"track-mem":               func(o *rpc.CriuOpts) **bool { return &o.TrackMem },
	"auto-dedup":              func(o *rpc.CriuOpts) **bool { return &o.AutoDedup },
	"link-remap":              func(o *rpc.CriuOpts) **bool { return &o.LinkRemap },
	"force-irmap":             func(o *rpc.CriuOpts) **bool { return &o.ForceIrmap },
	"restore-sibling":         func(o *rpc.CriuOpts) **bool { return &o.RstSibling },
	"enable-external-sharing": func(o *rpc.CriuOpts) **bool { return &o.ExtSharing },
	"enable-external-masters": func(o *rpc.CriuOpts) **bool { return &o.ExtMasters },
	"skip-in-flight":          func(o *rpc.CriuOpts) **bool { return &o.TcpSkipInFlight },
	"weak-sysctls":            func(o *rpc.CriuOpts) **bool { return &o.WeakSysctls },
	"lazy-pages":              func(o *rpc.CriuOpts) **bool { return &o.LazyPages },
	"orphan-pts-master":       func(o *rpc.CriuOpts) **bool { return &o.OrphanPtsMaster },
	"tcp-close":               func(o *rpc.CriuOpts) **bool { return &o.TcpClose },
	"tls":                     func(o *rpc.CriuOpts) **bool { return &o.Tls },
	"tls-no-cn-verify":        func(o *rpc.CriuOpts) **bool { return &o.TlsNoCnVerify },
	"mntns-compat-mode":       func(o *rpc.CriuOpts) **bool { return &o.MntnsCompatMode },
	"skip-file-rwx-check":     func(o *rpc.CriuOpts) **bool { return &o.SkipFileRwxCheck },
	"unprivileged":            func(o *rpc.CriuOpts) **bool { return &o.Unprivileged },
	"display-stats":           func(o *rpc.CriuOpts) **bool { return &o.DisplayStats },
}

// confStrings are the options that set a string field.
var confStrings = map[string]func(*rpc.CriuOpts) **string{
	"log-file":          func(o *rpc.CriuOpts) **string { return &o.LogFile },
	"root":              func(o *rpc.CriuOpts) **string { return &o.Root },
	"prev-images-dir":   func(o *rpc.CriuOpts) **string { return &o.ParentImg },
	"cgroup-props":      func(o *rpc.CriuOpts) **string { return &o.CgroupProps },
	"cgroup-props-file": func(o *rpc.CriuOpts) **string { return &o.CgroupPropsFile },
	"freeze-cgroup":     func(o *rpc.CriuOpts) **string { return &o.FreezeCgroup },
	"lsm-profile":       func(o *rpc.CriuOpts) **string { return &o.LsmProfile },
	"lsm-mount-context": func(o *rpc.CriuOpts) **string { return &o.LsmMountContext },
	"tls-cacert":        func(o *rpc.CriuOpts) **string { return &o.TlsCacert },
	"tls-cacrl":         func(o *rpc.CriuOpts) **string { return &o.TlsCacrl },
	"tls-cert":          func(o *rpc.CriuOpts) **string { return &o.TlsCert },
	"tls-key":           func(o *rpc.CriuOpts) **string { return &o.TlsKey },
	"cgroup-yard":       func(o *rpc.CriuOpts) **string { return &o.CgroupYard },
}

// confLists are the repeatable options that add to a list field.
var confLists = map[string]func(*rpc.CriuOpts) *[]string{
	"external":               func(o *rpc.CriuOpts) *[]string { return &o.External },
	"skip-mnt":               func(o *rpc.CriuOpts) *[]string { return &o.SkipMnt },
	"enable-fs":              func(o *rpc.CriuOpts) *[]string { return &o.EnableFs },
	"irmap-scan-path":        func(o *rpc.CriuOpts) *[]string { return &o.IrmapScanPaths },
	"cgroup-dump-controller": func(o *rpc.CriuOpts) *[]string { return &o.CgroupDumpController },
}

// confNoRPC are criu options that mean nothing over RPC (the request
// carries them otherwise, or they belong to other commands): criu takes
// them from a file and the request goes on as sent.
var confNoRPC = map[string]bool{
	"tree": true, "images-dir": true, "work-dir": true, "restore-detached": true, "daemon": true,
	"pidfile": true, "address": true, "port": true, "page-server": true, "log-pid": true,
	"libdir": true, "close": true, "action-script": true, "extra": true, "experimental": true,
	"all": true, "deprecated": true, "ghost-fiemap": true, "allow-uprobes": true,
	"status-fd": true, "ps-socket": true, "stream": true, "ms": true, "feature": true,
	"file-validation": true, "pre-dump-mode": true, "inherit-fd": true, "exec-cmd": true,
}

// applyConfig puts opts into o. With override false (the default files),
// an option the request set already is left as the request has it.
func applyConfig(o *rpc.CriuOpts, opts []criuconf.Option, override bool) error {
	for _, c := range opts {
		if err := applyOne(o, c, override); err != nil {
			return fmt.Errorf("rpc: configuration %s:%d: %w", c.File, c.Line, err)
		}
	}
	return nil
}

func applyOne(o *rpc.CriuOpts, c criuconf.Option, override bool) error {
	name, val := c.Name, true
	if _, ok := confBools[strings.TrimPrefix(name, "no-")]; ok && strings.HasPrefix(name, "no-") {
		name, val = strings.TrimPrefix(name, "no-"), false
	}
	needArg := func() error {
		if !c.HasArg {
			return fmt.Errorf("option --%s requires an argument: %w", name, ErrBadRequest)
		}
		return nil
	}
	if f, ok := confBools[name]; ok {
		if c.HasArg {
			return fmt.Errorf("option --%s takes no argument (%q): %w", name, c.Arg, ErrBadRequest)
		}
		if p := f(o); *p == nil || override {
			*p = proto.Bool(val)
		}
		return nil
	}
	if f, ok := confStrings[name]; ok {
		if err := needArg(); err != nil {
			return err
		}
		if p := f(o); *p == nil || override {
			*p = proto.String(c.Arg)
		}
		return nil
	}
	if f, ok := confLists[name]; ok {
		if err := needArg(); err != nil {
			return err
		}
		p := f(o)
		*p = append(*p, c.Arg)
		return nil
	}
	switch name {
	case "verbosity", "v":
		lvl := int32(2)
		if c.HasArg {
			n, err := strconv.Atoi(c.Arg)
			if err != nil || n < 0 {
				return fmt.Errorf("--verbosity %q: %w", c.Arg, ErrBadRequest)
			}
			lvl = int32(n)
		}
		if o.LogLevel == nil || override {
			o.LogLevel = proto.Int32(lvl)
		}
	case "manage-cgroups":
		if o.ManageCgroups == nil || override {
			o.ManageCgroups = proto.Bool(true)
		}
		if c.HasArg && (o.ManageCgroupsMode == nil || override) {
			m, ok := rpc.CriuCgMode_value[strings.ToUpper(c.Arg)]
			if !ok {
				return fmt.Errorf("--manage-cgroups %q: unknown mode: %w", c.Arg, ErrBadRequest)
			}
			o.ManageCgroupsMode = rpc.CriuCgMode(m).Enum()
		}
	case "ghost-limit", "timeout":
		if err := needArg(); err != nil {
			return err
		}
		n, err := parseConfSize(c.Arg)
		if err != nil {
			return fmt.Errorf("--%s: %w", name, err)
		}
		p := &o.GhostLimit
		if name == "timeout" {
			p = &o.Timeout
		}
		if *p == nil || override {
			*p = proto.Uint32(n)
		}
	case "network-lock":
		if err := needArg(); err != nil {
			return err
		}
		m, ok := rpc.CriuNetworkLockMethod_value[strings.ToUpper(c.Arg)]
		if !ok {
			return fmt.Errorf("--network-lock %q: %w", c.Arg, ErrBadRequest)
		}
		if o.NetworkLock == nil || override {
			o.NetworkLock = rpc.CriuNetworkLockMethod(m).Enum()
		}
	case "empty-ns":
		if err := needArg(); err != nil {
			return err
		}
		if c.Arg != "net" {
			return fmt.Errorf("--empty-ns %q: only net: %w", c.Arg, ErrBadRequest)
		}
		if o.EmptyNs == nil || override {
			o.EmptyNs = proto.Uint32(0x40000000) // CLONE_NEWNET
		}
	case "cpu-cap":
		// Kept as criu's bit mask; served as the request's cpu_cap.
		if o.CpuCap == nil || override {
			m, err := cpuinfo.ParseCaps(c.Arg, c.HasArg)
			if err != nil {
				return fmt.Errorf("%w: %w", err, ErrBadRequest)
			}
			// none alone, as on criu's command line: no image, no check.
			if m&cpuinfo.CapImage != 0 {
				o.CpuCap = proto.Uint32(uint32(m & cpuinfo.CapAll))
			}
		}
	case "ext-mount-map", "cgroup-root", "join-ns", "veth-pair":
		if err := needArg(); err != nil {
			return err
		}
		return mapListOption(o, name, c.Arg)
	default:
		if confNoRPC[name] {
			return nil
		}
		return fmt.Errorf("unrecognized option --%s: %w", name, ErrBadRequest)
	}
	return nil
}

// mapListOption adds a KEY:VALUE option to its list field.
func mapListOption(o *rpc.CriuOpts, name, arg string) error {
	k, v, ok := strings.Cut(arg, ":")
	switch name {
	case "ext-mount-map":
		if !ok {
			return fmt.Errorf("--ext-mount-map %q: want KEY:VALUE: %w", arg, ErrBadRequest)
		}
		o.ExtMnt = append(o.ExtMnt, &rpc.ExtMountMap{Key: proto.String(k), Val: proto.String(v)})
	case "cgroup-root":
		if !ok {
			k, v = "", arg
		}
		cr := &rpc.CgroupRoot{Path: proto.String(v)}
		if k != "" {
			cr.Ctrl = proto.String(k)
		}
		o.CgRoot = append(o.CgRoot, cr)
	case "join-ns":
		if !ok {
			return fmt.Errorf("--join-ns %q: want NS:PID|PATH: %w", arg, ErrBadRequest)
		}
		o.JoinNs = append(o.JoinNs, &rpc.JoinNamespace{Ns: proto.String(k), NsFile: proto.String(v)})
	case "veth-pair":
		if !ok {
			return fmt.Errorf("--veth-pair %q: want IN=OUT: %w", arg, ErrBadRequest)
		}
		o.Veths = append(o.Veths, &rpc.CriuVethPair{IfIn: proto.String(k), IfOut: proto.String(v)})
	}
	return nil
}

// parseConfSize is criu's size: a number with an optional K, M or G.
func parseConfSize(s string) (uint32, error) {
	mult := uint64(1)
	if s != "" {
		switch strings.ToUpper(s[len(s)-1:]) {
		case "K":
			mult, s = 1<<10, s[:len(s)-1]
		case "M":
			mult, s = 1<<20, s[:len(s)-1]
		case "G":
			mult, s = 1<<30, s[:len(s)-1]
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n*mult > 1<<32-1 {
		return 0, fmt.Errorf("bad size %q: %w", s, ErrBadRequest)
	}
	return uint32(n * mult), nil
}

// loadDefaultConfig applies criu's default configuration files to o.
func loadDefaultConfig(o *rpc.CriuOpts) error {
	opts, err := criuconf.Load("", false)
	if err != nil {
		return fmt.Errorf("rpc: %w", err)
	}
	return applyConfig(o, opts, false)
}

// loadRequestConfig applies the request's config_file to o, over what the
// request set. A file that does not exist is skipped, as criu does (runc
// always names /etc/criu/runc.conf).
func loadRequestConfig(o *rpc.CriuOpts) error {
	if o.GetConfigFile() == "" {
		return nil
	}
	opts, err := criuconf.ReadFile(o.GetConfigFile(), true)
	if err != nil {
		return fmt.Errorf("rpc: config_file: %w", err)
	}
	return applyConfig(o, opts, true)
}

// configure applies the configuration files to a request's options, in
// criu's order.
func configure(o *rpc.CriuOpts) error {
	if err := loadDefaultConfig(o); err != nil {
		return err
	}
	return loadRequestConfig(o)
}
