package codectest_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/codecs/codectest"
)

// toy is a minimal protocol that shows the kit needs no knowledge of a real
// one: u32 length of the rest, type, status, u64 id, a count of key/value
// pairs (u8 length + bytes each), then an opaque payload to the end.
type toy struct{ max int }

func newToy(o codecs.Options) (codecs.Codec, error) {
	if o.MaxFrameSize < 0 {
		return nil, fmt.Errorf("toy: MaxFrameSize %d is negative", o.MaxFrameSize)
	}
	for k := range o.Params {
		return nil, fmt.Errorf("toy: unknown param %q", k)
	}
	limit := o.MaxFrameSize
	if limit == 0 {
		limit = 1 << 20
	}
	return &toy{max: limit}, nil
}

const toyHeader = 4 + 1 + 1 + 8 + 1

func toyFrame(typ codecs.MessageType, status codecs.ResponseStatus, id uint64, md codecs.Metadata, payload string) []byte {
	b := make([]byte, toyHeader)
	b[4], b[5] = byte(typ), byte(status)
	binary.BigEndian.PutUint64(b[6:], id)
	b[14] = byte(len(md))
	for _, kv := range md {
		b = append(b, byte(len(kv.Key)))
		b = append(b, kv.Key...)
		b = append(b, byte(len(kv.Value)))
		b = append(b, kv.Value...)
	}
	b = append(b, payload...)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

func (c *toy) Decode(buf []byte, m *codecs.Message) (int, error) {
	if len(buf) < 4 {
		return 0, nil
	}
	size := 4 + int(binary.BigEndian.Uint32(buf))
	if size > c.max || size < toyHeader {
		return 0, codecs.Errorf("bad_size", "frame of %d bytes", size)
	}
	if len(buf) < size {
		return 0, nil
	}
	f := buf[:size]
	typ := codecs.MessageType(f[4])
	if typ < codecs.Request || typ > codecs.GoAway || f[5] > byte(codecs.StatusError) {
		return 0, codecs.Errorf("bad_type", "type %d status %d", f[4], f[5])
	}
	m.Type, m.Status, m.ID, m.Frame = typ, codecs.ResponseStatus(f[5]), binary.BigEndian.Uint64(f[6:]), f
	off := toyHeader
	for i := 0; i < int(f[14]); i++ {
		var kv [2]string
		for j := range kv {
			if off >= size || off+1+int(f[off]) > size {
				return 0, codecs.Errorf("bad_pair", "pair %d", i)
			}
			kv[j] = string(f[off+1 : off+1+int(f[off])])
			off += 1 + int(f[off])
		}
		m.Metadata.Set(kv[0], kv[1])
	}
	m.Private[0] = off
	return size, nil
}

func (c *toy) Encode(m *codecs.Message) ([]byte, error) {
	binary.BigEndian.PutUint64(m.Frame[6:], m.ID)
	if len(m.Mutations) == 0 {
		return m.Frame, nil
	}
	md := append(codecs.Metadata(nil), m.Metadata...)
	for _, kv := range m.Mutations {
		md.Set(kv.Key, kv.Value)
	}
	return toyFrame(m.Type, m.Status, m.ID, md, string(m.Frame[m.Private[0]:])), nil
}

func (c *toy) LocalReply(req *codecs.Message, kind codecs.ErrorKind, detail string) []byte {
	return toyFrame(codecs.Response, codecs.StatusError, req.ID, nil, kind.String()+": "+detail)
}

func (c *toy) HeartbeatReply(hb *codecs.Message) []byte {
	return toyFrame(codecs.HeartbeatReply, codecs.StatusOK, hb.ID, nil, "")
}

func toySamples() codectest.Samples {
	md := codecs.Metadata{{Key: "service", Value: "greeter"}, {Key: "method", Value: "hello"}, {Key: "env", Value: "dev"}}
	return codectest.Samples{
		Request:         toyFrame(codecs.Request, 0, 7, md, "ARGS"),
		RequestMetadata: md,
		MutableKey:      "env",
		Payload:         []byte("ARGS"),
		Oneway:          toyFrame(codecs.Oneway, 0, 8, md, "ARGS"),
		Response:        toyFrame(codecs.Response, codecs.StatusOK, 7, nil, "RESULT"),
		ErrorResponse:   toyFrame(codecs.Response, codecs.StatusAppError, 7, nil, "EXC"),
		Heartbeat:       toyFrame(codecs.Heartbeat, 0, 9, nil, ""),
		MaxID:           1<<64 - 1,
	}
}

func TestToyCodec(t *testing.T) {
	codectest.Run(t, newToy, toySamples())
}

func TestWithoutHeartbeat(t *testing.T) {
	s := toySamples()
	s.Heartbeat = nil
	codectest.Run(t, newToy, s)
}

// broken wraps the toy codec with one bug.
type broken struct {
	codecs.Codec
	bug string
	// decoded: this instance decoded a frame (stateful_reply).
	decoded *bool
}

func (b broken) Decode(buf []byte, m *codecs.Message) (int, error) {
	*b.decoded = true
	switch b.bug {
	case "eager":
		if len(buf) > 0 && len(buf) < 4 {
			return len(buf), nil // claims a frame it was not given
		}
	case "buffers_oversized":
		if len(buf) < len(toySamples().Request) {
			return 0, nil
		}
	case "panics":
		if len(buf) > 20 && buf[20] == 0xff {
			panic("bug")
		}
	}
	return b.Codec.Decode(buf, m)
}

func (b broken) Encode(m *codecs.Message) ([]byte, error) {
	switch b.bug {
	case "keeps_id":
		return bytes.Clone(m.Frame), nil
	case "drops_mutations":
		m2 := *m
		m2.Mutations = nil
		return b.Codec.Encode(&m2)
	case "drops_response_mutations":
		if m.Type == codecs.Response {
			m2 := *m
			m2.Mutations = nil
			return b.Codec.Encode(&m2)
		}
	case "response_mutation_loses_status":
		if m.Type == codecs.Response && len(m.Mutations) > 0 {
			m2 := *m
			m2.Status = codecs.StatusOK
			return b.Codec.Encode(&m2)
		}
	}
	return b.Codec.Encode(m)
}

func (b broken) LocalReply(req *codecs.Message, kind codecs.ErrorKind, detail string) []byte {
	if b.bug == "ok_reply" {
		return toyFrame(codecs.Response, codecs.StatusOK, req.ID, nil, "")
	}
	if b.bug == "stateful_reply" && !*b.decoded {
		// Like a codec that answers in the wire variant it detected on
		// its connection, not the one the request says.
		return toyFrame(codecs.Response, codecs.StatusError, req.ID, nil, "variant unknown")
	}
	return b.Codec.LocalReply(req, kind, detail)
}

func (b broken) HeartbeatReply(hb *codecs.Message) []byte {
	if b.bug == "reply_id" {
		return toyFrame(codecs.HeartbeatReply, codecs.StatusOK, hb.ID+1, nil, "")
	}
	return b.Codec.HeartbeatReply(hb)
}

// runBrokenKit runs the kit against one broken codec; it is meant to fail,
// in the child process TestKitCatchesBugs starts for each bug.
func runBrokenKit(t *testing.T, bug string) {
	codectest.Run(t, func(o codecs.Options) (codecs.Codec, error) {
		if bug == "buffers_oversized" {
			o.MaxFrameSize = 0
		}
		c, err := newToy(o)
		return broken{c, bug, new(bool)}, err
	}, toySamples())
}

func TestKitCatchesBugs(t *testing.T) {
	if bug := os.Getenv("CODECTEST_BUG"); bug != "" {
		runBrokenKit(t, bug)
		return
	}
	for bug, subtest := range map[string]string{
		"eager":                          "partial_frames",
		"buffers_oversized":              "oversized_frame",
		"panics":                         "garbage",
		"keeps_id":                       "id_rewrite",
		"drops_mutations":                "mutations",
		"drops_response_mutations":       "response_mutations",
		"response_mutation_loses_status": "response_mutations",
		"ok_reply":                       "error_replies",
		"stateful_reply":                 "error_replies",
		"reply_id":                       "heartbeat_reply",
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKitCatchesBugs$", "-test.v")
		cmd.Env = append(os.Environ(), "CODECTEST_BUG="+bug)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--- FAIL: TestKitCatchesBugs/"+subtest+" ") {
			t.Errorf("bug %s: the kit did not fail %s (err %v):\n%s", bug, subtest, err, out)
		}
	}
}
