package images

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"mime/quotedprintable"
	"net/netip"
	"strings"

	criuopts "github.com/checkpoint-restore/go-criu/v8/crit/images/opts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// CritJSON renders an entry as criu's crit does with --pretty (`crit
// show`): fields in field-number order, numbers as JSON numbers, and the
// fields criu's opts.proto marks shown its way - hex ("0x..."), flags
// ("PROT_READ | PROT_WRITE"), dev_t ("MAJOR:MINOR"), IP addresses, names
// of socket families and states - so that a user comparing stasis show
// with crit show sees the same thing. Bytes are base64 as Python's
// encodebytes writes it (76-character lines).
func CritJSON(m proto.Message) json.RawMessage {
	var b bytes.Buffer
	critMessage(&b, m.ProtoReflect(), false)
	return b.Bytes()
}

func critMessage(b *bytes.Buffer, m protoreflect.Message, hex bool) {
	b.WriteByte('{')
	fields := m.Descriptor().Fields()
	first := true
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		writeJSON(b, string(fd.Name()))
		b.WriteByte(':')
		o := critOpts(fd)
		fhex := hex || o.GetHex()
		v := m.Get(fd)
		if !fd.IsList() {
			critValue(b, fd, o, v, fhex)
			continue
		}
		l := v.List()
		if o.GetIpadd() {
			writeJSON(b, []string{critAddr(l)})
			continue
		}
		b.WriteByte('[')
		for j := 0; j < l.Len(); j++ {
			if j > 0 {
				b.WriteByte(',')
			}
			critValue(b, fd, o, l.Get(j), fhex)
		}
		b.WriteByte(']')
	}
	b.WriteByte('}')
}

func critOpts(fd protoreflect.FieldDescriptor) *criuopts.CRIU_Opts {
	o, _ := proto.GetExtension(fd.Options(), criuopts.E_Criu).(*criuopts.CRIU_Opts)
	return o
}

func critValue(b *bytes.Buffer, fd protoreflect.FieldDescriptor, o *criuopts.CRIU_Opts, v protoreflect.Value, hex bool) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		critMessage(b, v.Message(), hex)
	case protoreflect.BytesKind:
		if o.GetConv() == "unix_name" {
			var q bytes.Buffer
			w := quotedprintable.NewWriter(&q)
			w.Write(v.Bytes())
			w.Close()
			writeJSON(b, q.String())
			return
		}
		writeJSON(b, EncodeBytes(v.Bytes()))
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			writeJSON(b, string(ev.Name()))
		} else {
			writeJSON(b, nil)
		}
	case protoreflect.BoolKind:
		writeJSON(b, v.Bool())
	case protoreflect.StringKind:
		writeJSON(b, v.String())
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		writeJSON(b, v.Float())
	default:
		var n uint64
		signed := false
		switch fd.Kind() {
		case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
			protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
			n, signed = uint64(v.Int()), true
		default:
			n = v.Uint()
		}
		switch {
		case hex:
			writeJSON(b, fmt.Sprintf("0x%x", n))
		case o.GetDev() && o.GetOdev():
			writeJSON(b, fmt.Sprintf("%d:%d", (n>>8)&0xfff|(n>>32)&^0xfff, n&0xff|(n>>12)&^0xff))
		case o.GetDev():
			writeJSON(b, fmt.Sprintf("%d:%d", n>>20, n&(1<<20-1)))
		case o.GetFlags() != "":
			writeJSON(b, critFlags(o.GetFlags(), n))
		case o.GetDict() != "" && critDicts[o.GetDict()][string(fd.Name())][n] != "":
			writeJSON(b, critDicts[o.GetDict()][string(fd.Name())][n])
		case signed:
			writeJSON(b, int64(n))
		default:
			writeJSON(b, n)
		}
	}
}

// writeJSON writes v as Python's json module does: <, > and & as they are.
func writeJSON(b *bytes.Buffer, v any) {
	e := json.NewEncoder(b)
	e.SetEscapeHTML(false)
	e.Encode(v)
	b.Truncate(b.Len() - 1) // Encode's newline
}

// EncodeBytes is base64 with a newline after every 76 characters and at
// the end, as Python's base64.encodebytes (crit's) writes it.
func EncodeBytes(p []byte) string {
	s := base64.StdEncoding.EncodeToString(p)
	var out strings.Builder
	for len(s) > 76 {
		out.WriteString(s[:76] + "\n")
		s = s[76:]
	}
	if s != "" {
		out.WriteString(s + "\n")
	}
	return out.String()
}

// critAddr is an address kept as network-order 32-bit words.
func critAddr(l protoreflect.List) string {
	var raw []byte
	for i := 0; i < l.Len(); i++ {
		raw = binary.LittleEndian.AppendUint32(raw, uint32(l.Get(i).Uint()))
	}
	a, ok := netip.AddrFromSlice(raw)
	if !ok {
		return ""
	}
	return a.String()
}

type flagName struct {
	name string
	bit  uint64
}

// critFlagMaps are the named flag sets of criu's opts (mmap.prot, ...),
// with the names and values of the kernel's headers.
var critFlagMaps = map[string][]flagName{
	"mmap.prot":  {{"PROT_READ", 0x1}, {"PROT_WRITE", 0x2}, {"PROT_EXEC", 0x4}},
	"mmap.flags": {{"MAP_SHARED", 0x1}, {"MAP_PRIVATE", 0x2}, {"MAP_DROPPABLE", 0x8}, {"MAP_ANON", 0x20}, {"MAP_GROWSDOWN", 0x100}},
	"mmap.status": {{"VMA_AREA_REGULAR", 1 << 0}, {"VMA_AREA_STACK", 1 << 1}, {"VMA_AREA_VSYSCALL", 1 << 2},
		{"VMA_AREA_VDSO", 1 << 3}, {"VMA_AREA_HEAP", 1 << 5}, {"VMA_FILE_PRIVATE", 1 << 6}, {"VMA_FILE_SHARED", 1 << 7},
		{"VMA_ANON_SHARED", 1 << 8}, {"VMA_ANON_PRIVATE", 1 << 9}, {"VMA_AREA_SYSVIPC", 1 << 10}, {"VMA_AREA_SOCKET", 1 << 11},
		{"VMA_AREA_VVAR", 1 << 12}, {"VMA_AREA_AIORING", 1 << 13}, {"VMA_AREA_MEMFD", 1 << 14}, {"VMA_AREA_SHSTK", 1 << 15},
		{"VMA_AREA_UPROBES", 1 << 17}, {"VMA_UNSUPP", 1 << 31}},
	"rfile.flags": {{"O_WRONLY", 0o1}, {"O_RDWR", 0o2}, {"O_CREAT", 0o100}, {"O_EXCL", 0o200}, {"O_NOCTTY", 0o400},
		{"O_TRUNC", 0o1000}, {"O_APPEND", 0o2000}, {"O_NONBLOCK", 0o4000}, {"O_DSYNC", 0o10000}, {"FASYNC", 0o20000},
		{"O_DIRECT", 0o40000}, {"O_LARGEFILE", 0o100000}, {"O_DIRECTORY", 0o200000}, {"O_NOFOLLOW", 0o400000},
		{"O_NOATIME", 0o1000000}, {"O_CLOEXEC", 0o2000000}},
	"pmap.flags":  {{"PE_PARENT", 1 << 0}, {"PE_LAZY", 1 << 1}, {"PE_PRESENT", 1 << 2}},
	"seals.flags": {{"F_SEAL_SEAL", 0x1}, {"F_SEAL_SHRINK", 0x2}, {"F_SEAL_GROW", 0x4}, {"F_SEAL_WRITE", 0x8}, {"F_SEAL_FUTURE_WRITE", 0x10}},
}

// critFlags names the set bits, then the unnamed rest in hex; a set crit
// has no names for is shown in hex.
func critFlags(set string, n uint64) string {
	names, ok := critFlagMaps[set]
	if !ok {
		return fmt.Sprintf("0x%x", n)
	}
	var out []string
	for _, f := range names {
		if n&f.bit != 0 {
			out = append(out, f.name)
			n &^= f.bit
		}
	}
	if n != 0 {
		out = append(out, fmt.Sprintf("0x%x", n))
	}
	return strings.Join(out, " | ")
}

// critDicts name values of some fields, by dict and field name.
var critDicts = map[string]map[string]map[uint64]string{
	"gen": {"task_state": {1: "Alive", 3: "Zombie", 6: "Stopped"}},
	"sk": {
		"family": {1: "UNIX", 2: "INET", 10: "INET6", 16: "NETLINK", 17: "PACKET"},
		"type":   {1: "STREAM", 2: "DGRAM", 3: "RAW", 5: "SEQPACKET", 10: "PACKET"},
		"state": {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
			7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN"},
		"proto": {0: "IP", 6: "TCP", 17: "UDP", 136: "UDPLITE"},
	},
}
