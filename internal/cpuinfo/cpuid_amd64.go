package cpuinfo

// cpuid executes CPUID with EAX=leaf, ECX=sub (cpuid_amd64.s).
func cpuid(leaf, sub uint32) (a, b, c, d uint32)

const hostArch = true
