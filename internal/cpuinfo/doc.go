// Package cpuinfo is CRIU's cpuinfo.img: the CPU a dump was taken on
// (vendor, family, model, the CPUID feature words in CRIU's order, the
// XSAVE features and sizes), written at dump when --cpu-cap is given and
// checked at restore against the CPU stasis runs on, and the `cpuinfo
// dump` / `cpuinfo check` commands and RPC requests.
//
// host.go reads this CPU with CPUID (cpuid_amd64.s) into an Info, laid
// out as CRIU 4.2 lays it out so that each tool accepts the other's
// image; image.go writes and reads cpuinfo.img; check.go compares an
// image with this CPU for the capabilities --cpu-cap names (caps.go).
// Everything here is pure but for the CPUID instruction: no thread rules.
package cpuinfo
