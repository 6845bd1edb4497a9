package thrift

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/breeze-mesh/breeze/codecs"
)

// withLen frames msg with a 4-byte length.
func withLen(msg []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(msg))), msg...)
}

// call is a strict binary CALL header for method "m", seqid 1.
var call = []byte{0x80, 0x01, 0x00, 0x01, 0, 0, 0, 1, 'm', 0, 0, 0, 1}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// theader builds a THeader frame around msg with a raw header.
func theader(hdr, msg []byte) []byte {
	for len(hdr)%4 != 0 {
		hdr = append(hdr, 0)
	}
	b := []byte{0x0f, 0xff, 0, 0, 0, 0, 0, 1}
	b = binary.BigEndian.AppendUint16(b, uint16(len(hdr)/4))
	return withLen(cat(b, hdr, msg))
}

func ttheader(hdr, msg []byte) []byte {
	b := theader(hdr, msg)
	b[4], b[5] = 0x10, 0x00
	return b
}

func TestHostileFrames(t *testing.T) {
	deepBinary := cat(call, bytes.Repeat([]byte{bStruct, 0, 1}, 100000))
	deepList := cat(call, []byte{bList, 0, 1}, bytes.Repeat([]byte{bList, 0, 0, 0, 1}, 100000))
	deepCompact := cat([]byte{0x82, 0x21, 1, 1, 'm'}, bytes.Repeat([]byte{0x1c}, 100000))
	for _, tc := range []struct {
		name   string
		params map[string]string
		frame  []byte
		reason string
	}{
		{"http request", nil, []byte("GET / HTTP/1.1\r\n\r\n"), reasonUnknownProtocol},
		{"frame length 2 GiB", nil, []byte{0x7f, 0xff, 0xff, 0xff, 0x80, 0x01}, reasonUnknownProtocol},
		{"framed, length 2 GiB", map[string]string{"transport": "framed"}, []byte{0x7f, 0xff, 0xff, 0xff}, reasonTooLarge},
		{"framed, negative length", map[string]string{"transport": "framed"}, []byte{0xff, 0xff, 0xff, 0xff}, reasonBadLength},
		{"framed, length 1", nil, []byte{0, 0, 0, 1, 0x80, 0x01}, reasonBadLength},
		{"framed, length over the limit", nil, []byte{0, 0xfa, 0, 0, 0x80, 0x01}, reasonTooLarge},
		{"bad binary version", nil, withLen([]byte{0x80, 0x02, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0}), reasonBadMessage},
		{"message type 5", nil, withLen([]byte{0x80, 0x01, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0}), reasonBadMessage},
		{"name longer than the frame", nil, withLen([]byte{0x80, 0x01, 0, 1, 0, 0, 0, 99, 'm', 0, 0, 0, 1}), reasonBadMessage},
		{"negative name length", nil, withLen([]byte{0x80, 0x01, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0}), reasonBadMessage},
		{"compact version 2", nil, withLen([]byte{0x82, 0x22, 1, 0, 0}), reasonBadMessage},
		{"compact seqid varint of 6 bytes", nil, withLen([]byte{0x82, 0x21, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0}), reasonBadMessage},
		{"compact seqid over 32 bits", nil, withLen([]byte{0x82, 0x21, 0xff, 0xff, 0xff, 0xff, 0x1f, 0, 0}), reasonBadMessage},
		{"reply without result", nil, withLen([]byte{0x80, 0x01, 0, 2, 0, 0, 0, 1, 'm', 0, 0, 0, 1}), reasonBadBody},
		{"unframed string of 2 GiB", nil, cat(call, []byte{bString, 0, 1, 0x7f, 0xff, 0xff, 0xff}), reasonTooLarge},
		{"unframed negative string", nil, cat(call, []byte{bString, 0, 1, 0xff, 0xff, 0xff, 0xff}), reasonBadBody},
		{"unframed list of 2^31-1 i64", nil, cat(call, []byte{bList, 0, 1, bI64, 0x7f, 0xff, 0xff, 0xff}), reasonTooLarge},
		{"unframed map of 2^31-1 entries", nil, cat(call, []byte{bMap, 0, 1, bI32, bI32, 0x7f, 0xff, 0xff, 0xff}), reasonTooLarge},
		{"unframed negative list", nil, cat(call, []byte{bList, 0, 1, bI32, 0xff, 0xff, 0xff, 0xff}), reasonBadBody},
		{"unframed list of void", nil, cat(call, []byte{bList, 0, 1, bVoid, 0, 0, 0, 1, 0}), reasonBadBody},
		{"unframed unknown type", nil, cat(call, []byte{99, 0, 1}), reasonBadBody},
		{"unframed structs nested 100000 deep", nil, deepBinary, reasonTooDeep},
		{"unframed lists nested 100000 deep", nil, deepList, reasonTooDeep},
		{"unframed compact structs nested 100000 deep", nil, deepCompact, reasonTooDeep},
		{"unframed compact binary of 2 GiB", nil, cat([]byte{0x82, 0x21, 1, 1, 'm', 0x18, 0xff, 0xff, 0xff, 0xff, 0x07}), reasonTooLarge},
		{"unframed compact list of 2^32-1", nil, cat([]byte{0x82, 0x21, 1, 1, 'm', 0x19, 0xf5, 0xff, 0xff, 0xff, 0xff, 0x0f}), reasonTooLarge},
		{"unframed compact bad field type", nil, cat([]byte{0x82, 0x21, 1, 1, 'm', 0x1e}), reasonBadBody},
		{"THeader header past the frame", nil, withLen(cat([]byte{0x0f, 0xff, 0, 0, 0, 0, 0, 1, 0, 99}, call, []byte{0})), reasonBadHeader},
		{"THeader json protocol", nil, theader([]byte{1, 0}, cat(call, []byte{0})), reasonUnsupported},
		{"THeader zlib of garbage", nil, theader([]byte{0, 1, 1}, cat(call, []byte{0})), reasonBadBody},
		{"THeader zlib twice", nil, theader([]byte{0, 2, 1, 1}, cat(call, []byte{0})), reasonTransform},
		{"THeader snappy", nil, theader([]byte{0, 1, 3}, cat(call, []byte{0})), reasonTransform},
		{"THeader zlib bomb", map[string]string{}, theader([]byte{0, 1, 1}, zlibBytes(bytes.Repeat([]byte{0}, 20<<20))), reasonTooLarge},
		{"THeader 2^28 key/values", nil, theader([]byte{0, 0, 1, 0x80, 0x80, 0x80, 0x80, 0x01}, cat(call, []byte{0})), reasonBadHeader},
		{"THeader string past the header", nil, theader([]byte{0, 0, 1, 1, 100, 'k'}, cat(call, []byte{0})), reasonBadHeader},
		{"THeader compact id, binary message", nil, theader([]byte{2, 0}, cat(call, []byte{0})), reasonProtocol},
		{"TTHeader protobuf", nil, ttheader([]byte{4, 0}, cat(call, []byte{0})), reasonUnsupported},
		{"TTHeader transform", nil, ttheader([]byte{0, 1, 1, 0}, cat(call, []byte{0})), reasonTransform},
		{"TTHeader unknown info", nil, ttheader([]byte{0, 0, 0x22, 0}, cat(call, []byte{0})), reasonBadHeader},
		{"TTHeader string past the header", nil, ttheader([]byte{0, 0, 1, 0, 1, 0xff, 0xff}, cat(call, []byte{0})), reasonBadHeader},
		{"TTHeader inner frame lies", nil, ttheader([]byte{0, 0}, cat([]byte{0, 0, 0, 99}, call, []byte{0})), reasonBadHeader},
		{"TTHeader magic on a header connection", map[string]string{"transport": "header"}, ttheader([]byte{0, 0}, cat(call, []byte{0})), reasonTransport},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCodec(t, codecs.Options{Params: tc.params})
			var got string
			allocs := testing.AllocsPerRun(3, func() {
				var err error
				if got, err = decodeErr(c, bytes.Clone(tc.frame)); err != nil {
					t.Fatal(err)
				}
			})
			if got != tc.reason {
				t.Errorf("Decode: %s, want ProtocolError %s", got, tc.reason)
			}
			// Nothing the wire claims may size an allocation (inflating a
			// zlib message allocates, at most MaxFrameSize: by design).
			if allocs > 20 && !strings.Contains(tc.name, "zlib") {
				t.Errorf("%v allocations to refuse a %d-byte frame", allocs, len(tc.frame))
			}
		})
	}
}

// TestOversizedBeforeBody: a frame over the limit is refused from its
// length alone, and an unframed message as soon as it passes the limit.
func TestOversizedBeforeBody(t *testing.T) {
	req := testdata(t, "apache_framed_binary_request.bin")
	c := newCodec(t, codecs.Options{MaxFrameSize: len(req) - 1})
	if r, _ := decodeErr(c, req[:6]); r != reasonTooLarge && r != reasonUnknownProtocol {
		t.Errorf("6 bytes of a frame 1 byte over the limit: %s", r)
	}
	c = newCodec(t, codecs.Options{MaxFrameSize: len(req)})
	if r, _ := decodeErr(c, req); r != "ok" {
		t.Errorf("frame exactly at the limit: %s", r)
	}
	un := testdata(t, "apache_unframed_binary_request.bin")
	c = newCodec(t, codecs.Options{MaxFrameSize: len(un) - 1})
	if r, _ := decodeErr(c, un); r != reasonTooLarge {
		t.Errorf("unframed message 1 byte over the limit: %s", r)
	}
	c = newCodec(t, codecs.Options{MaxFrameSize: len(un)})
	if r, _ := decodeErr(c, un); r != "ok" {
		t.Errorf("unframed message exactly at the limit: %s", r)
	}
}

// TestTruncatedEverywhere cuts every frame under testdata at every length:
// each cut waits for more bytes; a framed length that lies fails cleanly.
func TestTruncatedEverywhere(t *testing.T) {
	for _, f := range flavorsUnderTest {
		for _, kind := range []string{"request", "response", "oneway", "exception", "app_exception", "void_request"} {
			b := f.frame(t, kind)
			c := newCodec(t, codecs.Options{Params: f.onewayParam()})
			for i := range b {
				if r, err := decodeErr(c, bytes.Clone(b[:i])); r != "need_more" || err != nil {
					t.Fatalf("%v %s cut at %d: %s %v", f, kind, i, r, err)
				}
				if f.transport == "unframed" || i < 6 {
					continue
				}
				lie := bytes.Clone(b[:i])
				binary.BigEndian.PutUint32(lie, uint32(i-4))
				if r, err := decodeErr(newCodec(t, codecs.Options{}), lie); err != nil || r == "need_more" {
					t.Fatalf("%v %s with length %d: %s %v", f, kind, i-4, r, err)
				}
			}
		}
	}
}

func zlibBytes(b []byte) []byte {
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}
