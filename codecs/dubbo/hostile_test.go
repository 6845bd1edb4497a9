package dubbo

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/breeze-mesh/breeze/codecs"
)

func TestHostileFrames(t *testing.T) {
	req := testdata(t, "request.bin")
	withBodyLen := func(f []byte, n uint32) []byte {
		f = bytes.Clone(f)
		binary.BigEndian.PutUint32(f[12:], n)
		return f
	}
	greet := func(args []any, desc string, atts []byte) []byte {
		return frame(reqFlag, 0, 1, requestBody("", "greet", desc, args, atts))
	}
	deep := bytes.Repeat([]byte{0x57}, 100000) // variable untyped lists, never closed
	for _, tc := range []struct {
		name   string
		frame  []byte
		reason string
	}{
		{"bad magic, first byte", []byte{0xca}, reasonBadMagic},
		{"bad magic, second byte", []byte{0xda, 0xbc}, reasonBadMagic},
		{"negative body length", withBodyLen(req[:headerLen], 0x80000000), reasonBadLength},
		{"header only, body over 8 MiB", withBodyLen(req[:headerLen], 8<<20+1), reasonTooLarge},
		{"body length 1 too short", withBodyLen(req, uint32(len(req)-headerLen-1)), reasonBadBody},
		{"body length 0", withBodyLen(req[:headerLen], 0), reasonBadBody},
		{"empty status-20 response", frame(respFlag, 20, 1, nil), reasonBadBody},
		{"result type 6", frame(respFlag, 20, 1, hess(int32(6))), reasonBadBody},
		{"result type -1", frame(respFlag, 20, 1, hess(int32(-1))), reasonBadBody},
		{"result type not an int", frame(respFlag, 20, 1, hess("1")), reasonBadBody},
		{"result with attachments that are a string", frame(respFlag, 20, 1, hess(int32(5), "k")), reasonBadBody},
		{"string claims 65535 chars, has 3", frame(reqFlag, 0, 1, []byte{'S', 0xff, 0xff, 'a', 'b', 'c'}), reasonBadBody},
		{"short string claims 1023 chars", frame(reqFlag, 0, 1, []byte{0x33, 0xff, 'a'}), reasonBadBody},
		{"string chunk never ends", frame(reqFlag, 0, 1, bytes.Repeat([]byte{'R', 0, 1, 'a'}, 1000)), reasonBadBody},
		{"bad UTF-8 lead byte", frame(reqFlag, 0, 1, []byte{0x01, 0xff}), reasonBadBody},
		{"four-byte UTF-8", greet(nil, "", []byte{'H', 0x01, 'k', 0x01, 0xf0, 0x9f, 0x98, 0x80, 'Z'}), reasonBadBody},
		// The scanner counts the three bytes of a lone surrogate as one
		// char; dubbo-go-hessian2 then reads past its buffer and panics.
		{"lone surrogate at the end of a key", greet(nil, "", []byte{'H', 0x01, 0xed, 0xa0, 0x80, 0x01, 'v', 'Z'}), reasonBadBody},
		{"list of 2^31-1 elements", greet([]any{}, "I", []byte{'X', 'I', 0x7f, 0xff, 0xff, 0xff}), reasonBadBody},
		{"typed list of 2^31-1 elements", greet([]any{}, "I", []byte{'V', 0x01, 'x', 'I', 0x7f, 0xff, 0xff, 0xff, 0x90}), reasonBadBody},
		{"negative list length", greet([]any{}, "I", []byte{'X', 'I', 0xff, 0xff, 0xff, 0xff}), reasonBadBody},
		{"class of 2^31-1 fields", greet([]any{}, "I", []byte{'C', 0x01, 'X', 'I', 0x7f, 0xff, 0xff, 0xff}), reasonBadBody},
		{"class with negative field count", greet([]any{}, "I", []byte{'C', 0x01, 'X', 0x8f, 0x60}), reasonBadBody},
		{"object of an undefined class", greet([]any{}, "I", []byte{0x61}), reasonBadBody},
		{"object index out of range", greet([]any{}, "I", []byte{'O', 'I', 0x7f, 0, 0, 0}), reasonBadBody},
		{"nesting 100000 deep", greet([]any{}, "I", deep), reasonBadBody},
		{"map never closed", greet(nil, "", []byte{'H', 0x01, 'k', 0x01, 'v'}), reasonBadBody},
		{"attachments are a list", greet(nil, "", hess([]string{"a"})), reasonBadBody},
		{"attachments are a reference", greet(nil, "", []byte{'Q', 0x90}), reasonBadBody},
		{"fewer arguments than the descriptor says", greet([]any{int32(1)}, "II", nil), reasonBadBody},
		{"descriptor with an unknown letter", greet(nil, "Q", hmap()), reasonBadBody},
		{"descriptor class without ';'", greet(nil, "Ljava/lang/String", hmap()), reasonBadBody},
		{"descriptor array of nothing", greet(nil, "[[", hmap()), reasonBadBody},
		{"reserved tag", greet([]any{}, "I", []byte{0x40}), reasonBadBody},
		{"end tag as a value", greet([]any{}, "I", []byte{'Z'}), reasonBadBody},
		{"service name is an int", frame(reqFlag, 0, 1, hess("2.0.2", int32(5))), reasonBadBody},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCodec(t, codecs.Options{})
			var got string
			allocs := testing.AllocsPerRun(3, func() {
				var err error
				if got, err = decodeErr(c, tc.frame); err != nil {
					t.Fatal(err)
				}
			})
			if got != tc.reason {
				t.Errorf("Decode: %s, want ProtocolError %s", got, tc.reason)
			}
			// Nothing the wire claims may size an allocation.
			if allocs > 20 {
				t.Errorf("%v allocations to refuse a %d-byte frame", allocs, len(tc.frame))
			}
		})
	}
}

// TestOversizedBeforeBody checks that a frame over the limit is refused from
// its header alone: the proxy never buffers the body.
func TestOversizedBeforeBody(t *testing.T) {
	req := testdata(t, "request.bin")
	c := newCodec(t, codecs.Options{MaxFrameSize: len(req) - 1})
	if r, _ := decodeErr(c, req[:headerLen]); r != reasonTooLarge {
		t.Errorf("header of a frame 1 byte over the limit: %s, want %s", r, reasonTooLarge)
	}
	c = newCodec(t, codecs.Options{MaxFrameSize: len(req)})
	if r, _ := decodeErr(c, req); r != "ok" {
		t.Errorf("frame exactly at the limit: %s", r)
	}
}

// TestTruncatedEverywhere cuts every frame under testdata at every length
// and lies about the body length: each cut must wait for more bytes, each
// lie must fail cleanly.
func TestTruncatedEverywhere(t *testing.T) {
	c := newCodec(t, codecs.Options{})
	for _, name := range []string{"request.bin", "oneway.bin", "generic.bin", "response.bin", "response_exc.bin", "response_null.bin"} {
		f := testdata(t, name)
		for i := range f {
			if r, err := decodeErr(c, f[:i]); r != "need_more" || err != nil {
				t.Fatalf("%s cut at %d: %s %v", name, i, r, err)
			}
			if i < headerLen {
				continue
			}
			lie := bytes.Clone(f[:i])
			binary.BigEndian.PutUint32(lie[12:], uint32(i-headerLen))
			if r, err := decodeErr(c, lie); err != nil || r != "ok" && r != reasonBadBody {
				t.Fatalf("%s with body length %d: %s %v", name, i-headerLen, r, err)
			}
		}
	}
}
