package netns

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// nlattrs builds the attributes of an rtnetlink request.
type nlattrs struct{ b []byte }

func (a *nlattrs) add(typ uint16, val []byte) {
	var h [4]byte
	binary.NativeEndian.PutUint16(h[:], uint16(4+len(val)))
	binary.NativeEndian.PutUint16(h[2:], typ)
	a.b = append(a.b, h[:]...)
	a.b = append(a.b, val...)
	for len(a.b)%4 != 0 {
		a.b = append(a.b, 0)
	}
}

func (a *nlattrs) u32(typ uint16, v uint32) {
	a.add(typ, binary.NativeEndian.AppendUint32(nil, v))
}

func (a *nlattrs) u8(typ uint16, v uint8) { a.add(typ, []byte{v}) }

func (a *nlattrs) str(typ uint16, s string) { a.add(typ, append([]byte(s), 0)) }

func (a *nlattrs) nest(typ uint16, fn func(*nlattrs)) {
	var in nlattrs
	fn(&in)
	a.add(typ|unix.NLA_F_NESTED, in.b)
}

// ifinfomsg is struct ifinfomsg.
func ifinfomsg(index int32, flags, change uint32) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(b[4:], uint32(index))
	binary.NativeEndian.PutUint32(b[8:], flags)
	binary.NativeEndian.PutUint32(b[12:], change)
	return b
}

// linkMsg is an RTM_NEWLINK message: header room, ifinfomsg, attributes.
func linkMsg(info []byte, a *nlattrs) []byte {
	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(info)+len(a.b))
	msg = append(msg, info...)
	return append(msg, a.b...)
}
