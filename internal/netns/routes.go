package netns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
)

// saved is one of the iproute2 save images of a namespace.
type saved struct {
	pattern string // image name, %d the namespace id
	magic   uint32
	what    string
	typ     uint16 // RTM_GET*
	family  byte
	hlen    int // the family header: ifaddrmsg, rtmsg, fib_rule_hdr
	keep    func(msg []byte) bool
	// pass orders the replay (routes through a gateway after those to
	// a link, multipath last, as `ip route restore` does).
	pass func(msg []byte) int
}

const (
	ifaddrmsgLen = 8
	rtmsgLen     = 12
)

var savedImages = []saved{
	{pattern: "ifaddr-%d.img", magic: ifaddrMagic, what: "addresses", typ: unix.RTM_GETADDR, family: unix.AF_UNSPEC, hlen: ifaddrmsgLen},
	{pattern: "route-%d.img", magic: routeMagic, what: "ipv4 routes", typ: unix.RTM_GETROUTE, family: unix.AF_INET, hlen: rtmsgLen, keep: keepRoute, pass: routePass},
	{pattern: "route6-%d.img", magic: routeMagic, what: "ipv6 routes", typ: unix.RTM_GETROUTE, family: unix.AF_INET6, hlen: rtmsgLen, keep: keepRoute, pass: routePass},
	{pattern: "rule-%d.img", magic: ruleMagic, what: "rules", typ: unix.RTM_GETRULE, family: unix.AF_UNSPEC, hlen: rtmsgLen},
}

// keepRoute drops what the kernel makes by itself and must not be
// replayed: cached clones and the local table (filled from addresses).
// Unlike `ip route save`, which criu runs and which keeps the main
// table only, every other table is kept (policy routing's).
func keepRoute(msg []byte) bool {
	if len(msg) < unix.NLMSG_HDRLEN+rtmsgLen {
		return false
	}
	h := msg[unix.NLMSG_HDRLEN:]
	table := uint32(h[4])
	var flags uint32 = binary.NativeEndian.Uint32(h[8:])
	rtattrs(msg, rtmsgLen, func(typ uint16, v []byte) {
		if typ == unix.RTA_TABLE && len(v) >= 4 {
			table = binary.NativeEndian.Uint32(v)
		}
	})
	return flags&unix.RTM_F_CLONED == 0 && table != unix.RT_TABLE_LOCAL
}

func routePass(msg []byte) int {
	pass := 0
	rtattrs(msg, rtmsgLen, func(typ uint16, _ []byte) {
		switch typ {
		case unix.RTA_GATEWAY, unix.RTA_VIA:
			pass = max(pass, 1)
		case unix.RTA_MULTIPATH:
			pass = 2
		}
	})
	return pass
}

// dumpSaved writes the address, route and rule images of the calling
// thread's network namespace.
func dumpSaved(dir *images.Dir, id uint32) error {
	nl, err := openRtnl()
	if err != nil {
		return err
	}
	defer nl.close()
	for _, s := range savedImages {
		f := &saveFile{magic: s.magic}
		hdr := make([]byte, s.hlen)
		hdr[0] = s.family
		err := nl.dump(s.what, s.typ, hdr, func(m []byte) error {
			if s.keep == nil || s.keep(m) {
				f.msgs = append(f.msgs, append([]byte(nil), m...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		name := fmt.Sprintf(s.pattern, id)
		w, err := dir.CreateRaw(name)
		if err != nil {
			return fmt.Errorf("image %s: %w", name, err)
		}
		err = f.write(w)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("image %s: %w", name, err)
		}
	}
	return nil
}

// readSaved reads the address, route and rule images; a missing one
// (criu writes no route6 image without ipv6) is empty.
func readSaved(dir *images.Dir, id uint32) (map[string]*saveFile, error) {
	out := map[string]*saveFile{}
	for _, s := range savedImages {
		name := fmt.Sprintf(s.pattern, id)
		if !dir.Has(name) {
			continue
		}
		f, err := dir.OpenRaw(name)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", name, err)
		}
		b, err := io.ReadAll(io.LimitReader(f, 64<<20))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", name, err)
		}
		if out[s.pattern], err = readSaveFile(b, s.magic, name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// restoreSaved replays the saved messages in the calling thread's
// network namespace, as `ip addr/route/rule restore` do.
func restoreSaved(files map[string]*saveFile, id uint32) error {
	nl, err := openRtnl()
	if err != nil {
		return err
	}
	defer nl.close()
	for _, s := range savedImages {
		f := files[s.pattern]
		if f == nil {
			continue
		}
		name := fmt.Sprintf(s.pattern, id)
		for pass := 0; pass < 3; pass++ {
			for i, m := range f.msgs {
				if (s.pass == nil && pass > 0) || (s.pass != nil && s.pass(m) != pass) {
					continue
				}
				typ := binary.NativeEndian.Uint16(m[4:])
				if typ != s.typ-2 { // RTM_NEW* precedes RTM_GET* by 2
					return fmt.Errorf("image %s: message %d of type %d, want %d: %w", name, i, typ, s.typ-2, ErrBadImage)
				}
				if s.typ == unix.RTM_GETRULE && defaultRule(m) {
					continue
				}
				msg := append([]byte(nil), m...)
				err := nl.request(msg, typ, unix.NLM_F_CREATE|unix.NLM_F_EXCL)
				if errors.Is(err, unix.EEXIST) {
					continue
				}
				if err != nil {
					return fmt.Errorf("restore %s of image %s: message %d (%s): %w", s.what, name, i, describe(s, msg), err)
				}
			}
		}
	}
	return nil
}

// describe names a saved message in an error: its family and link.
func describe(s saved, msg []byte) string {
	if len(msg) < unix.NLMSG_HDRLEN+s.hlen {
		return "short"
	}
	h := msg[unix.NLMSG_HDRLEN:]
	switch s.typ {
	case unix.RTM_GETADDR:
		return fmt.Sprintf("family %d, prefix /%d, link %d", h[0], h[1], binary.NativeEndian.Uint32(h[4:]))
	case unix.RTM_GETROUTE:
		oif := uint32(0)
		rtattrs(msg, rtmsgLen, func(typ uint16, v []byte) {
			if typ == unix.RTA_OIF && len(v) >= 4 {
				oif = binary.NativeEndian.Uint32(v)
			}
		})
		return fmt.Sprintf("family %d, /%d, table %d, link %d", h[0], h[1], h[4], oif)
	}
	return fmt.Sprintf("family %d", h[0])
}

// FRA_PRIORITY, FRA_TABLE (include/uapi/linux/fib_rules.h).
const (
	fraPriority = 6
	fraTable    = 15
)

// defaultRule tells the rule every namespace starts with, "0: from all
// lookup local": the kernel omits a priority of 0, and the rule replayed
// without one would land at another priority.
func defaultRule(m []byte) bool {
	if len(m) < unix.NLMSG_HDRLEN+rtmsgLen {
		return false
	}
	table, prio := uint32(m[unix.NLMSG_HDRLEN+4]), false
	rtattrs(m, rtmsgLen, func(typ uint16, v []byte) {
		switch typ {
		case fraPriority:
			prio = u32(v) != 0
		case fraTable:
			table = u32(v)
		}
	})
	return !prio && table == unix.RT_TABLE_LOCAL
}
