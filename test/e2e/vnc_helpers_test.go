package e2e

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"os"
	"strconv"
	"time"
)

// Helpers of vnc_test.go: screenshots of an X server through its two
// doors, a VNC client's framebuffer (RFB 3.8, no security, raw encoding)
// and xwd's dump of the root window, each turned into an image.Image.

// vncGrab connects to the VNC server on 127.0.0.1:port as a new client and
// returns its whole framebuffer.
func vncGrab(port int) (image.Image, error) {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("vnc: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	r := bufio.NewReader(c)
	ver := make([]byte, 12)
	if _, err := io.ReadFull(r, ver); err != nil {
		return nil, fmt.Errorf("vnc: read the server's version: %w", err)
	}
	if string(ver[:4]) != "RFB " {
		return nil, fmt.Errorf("vnc: greeting %q is not RFB", ver)
	}
	if _, err := c.Write([]byte("RFB 003.008\n")); err != nil {
		return nil, fmt.Errorf("vnc: send the version: %w", err)
	}
	n, err := r.ReadByte()
	if err != nil || n == 0 {
		return nil, fmt.Errorf("vnc: %d security types, %v", n, err)
	}
	types := make([]byte, n)
	if _, err := io.ReadFull(r, types); err != nil {
		return nil, fmt.Errorf("vnc: read the security types: %w", err)
	}
	if _, err := c.Write([]byte{1}); err != nil { // None
		return nil, fmt.Errorf("vnc: choose security None of %v: %w", types, err)
	}
	var result uint32
	if err := binary.Read(r, binary.BigEndian, &result); err != nil || result != 0 {
		return nil, fmt.Errorf("vnc: security result %d, %v (types offered %v)", result, err, types)
	}
	if _, err := c.Write([]byte{1}); err != nil { // ClientInit, shared
		return nil, fmt.Errorf("vnc: client init: %w", err)
	}
	var init struct {
		W, H   uint16
		Format [16]byte
		Name   uint32
	}
	if err := binary.Read(r, binary.BigEndian, &init); err != nil {
		return nil, fmt.Errorf("vnc: server init: %w", err)
	}
	if _, err := io.CopyN(io.Discard, r, int64(init.Name)); err != nil {
		return nil, fmt.Errorf("vnc: desktop name: %w", err)
	}
	// SetPixelFormat: 32 bits, depth 24, little-endian, true colour,
	// 8 bits a channel at shifts 16, 8, 0; SetEncodings: raw only; then a
	// full FramebufferUpdateRequest.
	msg := []byte{0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0}
	msg = append(msg, 2, 0, 0, 1, 0, 0, 0, 0)
	msg = append(msg, 3, 0, 0, 0, 0, 0)
	msg = binary.BigEndian.AppendUint16(msg, init.W)
	msg = binary.BigEndian.AppendUint16(msg, init.H)
	if _, err := c.Write(msg); err != nil {
		return nil, fmt.Errorf("vnc: request the framebuffer: %w", err)
	}
	img := image.NewRGBA(image.Rect(0, 0, int(init.W), int(init.H)))
	covered := 0
	for covered < int(init.W)*int(init.H) {
		typ, err := r.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("vnc: read a message: %w", err)
		}
		if typ != 0 {
			return nil, fmt.Errorf("vnc: server message type %d, want a framebuffer update", typ)
		}
		var hdr struct {
			Pad   byte
			Rects uint16
		}
		if err := binary.Read(r, binary.BigEndian, &hdr); err != nil {
			return nil, fmt.Errorf("vnc: update header: %w", err)
		}
		for i := 0; i < int(hdr.Rects); i++ {
			var rect struct {
				X, Y, W, H uint16
				Enc        int32
			}
			if err := binary.Read(r, binary.BigEndian, &rect); err != nil {
				return nil, fmt.Errorf("vnc: rectangle %d: %w", i, err)
			}
			if rect.Enc != 0 {
				return nil, fmt.Errorf("vnc: rectangle %d in encoding %d, asked for raw", i, rect.Enc)
			}
			px := make([]byte, 4*int(rect.W))
			for y := 0; y < int(rect.H); y++ {
				if _, err := io.ReadFull(r, px); err != nil {
					return nil, fmt.Errorf("vnc: rectangle %d row %d: %w", i, y, err)
				}
				for x := 0; x < int(rect.W); x++ {
					img.Set(int(rect.X)+x, int(rect.Y)+y, color.RGBA{px[4*x+2], px[4*x+1], px[4*x], 255})
				}
			}
			covered += int(rect.W) * int(rect.H)
		}
	}
	return img, nil
}

// xwdImage decodes what `xwd -root` writes for a 24-bit TrueColor screen:
// a big-endian header of 25 32-bit fields, the window name, the colormap
// entries, then the pixels in the server's byte order.
func xwdImage(b []byte) (image.Image, error) {
	if len(b) < 100 {
		return nil, fmt.Errorf("xwd: %d bytes, no header", len(b))
	}
	f := func(i int) uint32 { return binary.BigEndian.Uint32(b[4*i:]) }
	hsize, version, format, width, height := f(0), f(1), f(2), f(4), f(5)
	byteOrder, bpp, stride := f(7), f(11), f(12)
	rmask, gmask, bmask, ncolors := f(14), f(15), f(16), f(19)
	if version != 7 || format != 2 || bpp != 32 {
		return nil, fmt.Errorf("xwd: version %d, format %d, %d bits a pixel: want version 7, ZPixmap, 32", version, format, bpp)
	}
	off := int(hsize) + 12*int(ncolors)
	if off+int(stride)*int(height) > len(b) || stride < 4*width {
		return nil, fmt.Errorf("xwd: %dx%d with stride %d at offset %d does not fit %d bytes", width, height, stride, off, len(b))
	}
	shift := func(m uint32) uint {
		s := uint(0)
		for m != 0 && m&1 == 0 {
			m >>= 1
			s++
		}
		return s
	}
	img := image.NewRGBA(image.Rect(0, 0, int(width), int(height)))
	for y := 0; y < int(height); y++ {
		row := b[off+y*int(stride):]
		for x := 0; x < int(width); x++ {
			var p uint32
			if byteOrder == 0 { // LSBFirst
				p = binary.LittleEndian.Uint32(row[4*x:])
			} else {
				p = binary.BigEndian.Uint32(row[4*x:])
			}
			img.Set(x, y, color.RGBA{uint8((p & rmask) >> shift(rmask)), uint8((p & gmask) >> shift(gmask)), uint8((p & bmask) >> shift(bmask)), 255})
		}
	}
	return img, nil
}

// writePNG saves img as a PNG file.
func writePNG(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("png %s: %w", path, err)
	}
	return f.Close()
}

// colours is the number of distinct colours of img within r.
func colours(img image.Image, r image.Rectangle) int {
	seen := map[color.RGBA]bool{}
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			seen[color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)] = true
		}
	}
	return len(seen)
}

// differs reports whether a and b differ anywhere within r.
func differs(a, b image.Image, r image.Rectangle) bool {
	r = r.Intersect(a.Bounds()).Intersect(b.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if color.RGBAModel.Convert(a.At(x, y)) != color.RGBAModel.Convert(b.At(x, y)) {
				return true
			}
		}
	}
	return false
}
