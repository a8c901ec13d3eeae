package stasis

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	ipc_sem "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-sem"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// ShowOptions selects how Show renders an image.
type ShowOptions struct {
	Pretty    bool // indent the JSON
	NoPayload bool // the size of extra data instead of its contents (crit's --nopl)
}

// Show decodes the image file at path to JSON on out, as `crit show`
// does: {"magic": "CORE", "entries": [...]}, field names as in the .proto
// files, and the fields criu marks shown its way (addresses in hex, flags
// by name, devices as MAJOR:MINOR, IP addresses, socket families and
// states). Extra data (pipe contents, socket queues, ghost files) is
// base64 in "extra". Raw images (pages-N.img) are summarized: magic
// "PAGES", size, pages. A damaged image is an error naming the file and
// the offset.
func Show(out io.Writer, path string, o ShowOptions) error { return show(out, path, o) }

func show(out io.Writer, path string, o ShowOptions) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("show: %w", err)
	}
	defer f.Close()

	var doc any
	if images.IsRaw(filepath.Base(path)) {
		if doc, err = rawSummary(f, path); err != nil {
			return err
		}
	} else {
		// Decode's *images.Error names the file and the offset.
		img, err := images.Decode(f, path)
		if err != nil {
			return err
		}
		if doc, err = imageJSON(img, o); err != nil {
			return fmt.Errorf("show %s: %w", path, err)
		}
	}
	var b []byte
	if o.Pretty {
		b, err = json.MarshalIndent(doc, "", "    ")
	} else {
		b, err = json.Marshal(doc)
	}
	if err != nil {
		return fmt.Errorf("show %s: %w", path, err)
	}
	_, err = out.Write(append(b, '\n'))
	return err
}

// rawSummary describes a headerless image: crit has nothing to decode
// there, but the size (in pages, for pages-N.img) is what one looks for.
func rawSummary(f *os.File, path string) (any, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("show %s: %w", path, err)
	}
	magic, err := images.Magic(path)
	if err != nil {
		return nil, err
	}
	if magic != "PAGES" {
		return struct {
			Magic string `json:"magic"`
			Size  int64  `json:"size"`
		}{magic, st.Size()}, nil
	}
	ps := int64(os.Getpagesize())
	if st.Size()%ps != 0 {
		return nil, fmt.Errorf("show %s: %d bytes is not a whole number of %d-byte pages", path, st.Size(), ps)
	}
	return struct {
		Magic string `json:"magic"`
		Size  int64  `json:"size"`
		Pages int64  `json:"pages"`
	}{magic, st.Size(), st.Size() / ps}, nil
}

// imageJSON renders entries with protojson (proto field names, like
// crit) and keeps each entry's field order, which a map would lose.
func imageJSON(img *images.Image, o ShowOptions) (any, error) {
	entries := make([]json.RawMessage, 0, len(img.Entries))
	for i, m := range img.Entries {
		e, err := entryJSON(m)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if img.Extra != nil && !chunkedGhostHead(m) {
			// crit shows the extra data of every entry of such an image,
			// an empty one too; not for the header of a ghost file in
			// chunks, which has none.
			x, err := extraJSON(img.Magic, m, img.Extra[i], o)
			if err != nil {
				return nil, fmt.Errorf("entry %d extra data: %w", i, err)
			}
			e = withField(e, "extra", x)
		}
		entries = append(entries, e)
	}
	return struct {
		Magic   string            `json:"magic"`
		Entries []json.RawMessage `json:"entries"`
	}{img.Magic, entries}, nil
}

// chunkedGhostHead reports the header entry of a ghost file whose data
// follows in chunk entries.
func chunkedGhostHead(m proto.Message) bool {
	g, ok := m.(*ghost_file.GhostFileEntry)
	return ok && g.GetChunks()
}

// entryJSON renders an entry as `crit show` does (images.CritJSON).
func entryJSON(m proto.Message) (json.RawMessage, error) {
	return images.CritJSON(m), nil
}

// withField appends "key": value to a compact JSON object.
func withField(obj json.RawMessage, key string, value json.RawMessage) json.RawMessage {
	k, _ := json.Marshal(key)
	out := bytes.TrimSuffix(obj, []byte("}"))
	if len(out) > 1 {
		out = append(out, ',')
	}
	out = append(out, k...)
	out = append(out, ':')
	out = append(out, value...)
	return append(out, '}')
}

// extraJSON renders extra data the way crit does: base64 blobs (in lines
// as Python's encodebytes), TCP
// queues as {inq, outq}, semaphores as numbers, ipc messages as
// [message, base64 text, ...].
func extraJSON(magic string, m proto.Message, x []byte, o ShowOptions) (json.RawMessage, error) {
	if o.NoPayload {
		return json.Marshal(fmt.Sprintf("... <%d bytes>", len(x)))
	}
	b64 := images.EncodeBytes
	switch e := m.(type) {
	case *tcp_stream.TcpStreamEntry:
		in, out, err := images.TCPQueues(e, x)
		if err != nil {
			return nil, err
		}
		return json.Marshal(struct {
			Inq  string `json:"inq"`
			Outq string `json:"outq"`
		}{b64(in), b64(out)})
	case *ipc_sem.IpcSemEntry:
		v, err := images.SemValues(e, x)
		if err != nil {
			return nil, err
		}
		return json.Marshal(v)
	case *ipc_msg.IpcMsgEntry:
		msgs, err := images.IPCMessages(e, x)
		if err != nil {
			return nil, err
		}
		list := make([]json.RawMessage, 0, 2*len(msgs))
		for _, msg := range msgs {
			j, err := entryJSON(msg.Msg)
			if err != nil {
				return nil, err
			}
			t, _ := json.Marshal(b64(msg.Text))
			list = append(list, j, t)
		}
		return json.Marshal(list)
	}
	return json.Marshal(b64(x))
}
