package thrift

import (
	"bytes"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/breeze-mesh/breeze/codecs"
)

// The fuzz targets decode arbitrary bytes on a codec of one flavor (or
// auto-detecting, FuzzDecode), seeded with the real frames under testdata.
//
//	go test -run '^$' -fuzz '^FuzzDecodeUnframedCompact$' -fuzztime 2m ./codecs/thrift

func FuzzDecode(f *testing.F)              { fuzzFlavor(f, "", "", "*") }
func FuzzDecodeFramedBinary(f *testing.F)  { fuzzFlavor(f, "framed", "binary", "*_framed_binary*") }
func FuzzDecodeFramedCompact(f *testing.F) { fuzzFlavor(f, "framed", "compact", "*_framed_compact*") }
func FuzzDecodeUnframedBinary(f *testing.F) {
	fuzzFlavor(f, "unframed", "binary", "*_unframed_binary*")
}
func FuzzDecodeUnframedCompact(f *testing.F) {
	fuzzFlavor(f, "unframed", "compact", "*_unframed_compact*")
}
func FuzzDecodeHeaderBinary(f *testing.F)  { fuzzFlavor(f, "header", "binary", "*_header_binary*") }
func FuzzDecodeHeaderCompact(f *testing.F) { fuzzFlavor(f, "header", "compact", "*_header_compact*") }
func FuzzDecodeTTHeaderBinary(f *testing.F) {
	fuzzFlavor(f, "ttheader", "binary", "*_ttheader_binary*")
}

// FuzzDecodeTTHeaderCompact is seeded with synthetic frames (see
// ttheaderCompact): no peer at hand writes TTHeader with compact.
func FuzzDecodeTTHeaderCompact(f *testing.F) {
	for _, kind := range []string{"request", "response", "oneway", "exception", "app_exception", "void_request"} {
		f.Add(ttheaderCompact(f, kind))
	}
	fuzzFlavor(f, "ttheader", "compact", "")
}

func fuzzFlavor(f *testing.F, transport, protocol, glob string) {
	if glob != "" {
		files, err := filepath.Glob(filepath.Join("testdata", glob+".bin"))
		if err != nil || len(files) == 0 {
			f.Fatalf("no seed frames %s under testdata: %v", glob, err)
		}
		for _, name := range files {
			f.Add(testdata(f, filepath.Base(name)))
		}
	}
	params := map[string]string{"oneway_methods": "Fire"}
	if transport != "" {
		params["transport"], params["protocol"] = transport, protocol
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkDecode(t, params, data) })
}

// checkDecode asserts what must hold for any input: no panic, n within the
// input, errors are ProtocolErrors, an accepted frame encodes unchanged
// (with its own id and with another), and a header mutation yields a frame
// that decodes and shows it.
func checkDecode(t *testing.T, params map[string]string, data []byte) {
	c, err := New(codecs.Options{MaxFrameSize: 1 << 20, Params: params})
	if err != nil {
		t.Fatal(err)
	}
	for rest := data; len(rest) > 0; {
		var msg codecs.Message
		n, err := c.Decode(rest, &msg)
		if n < 0 || n > len(rest) {
			t.Fatalf("n = %d for %d bytes", n, len(rest))
		}
		if err != nil {
			var pe *codecs.ProtocolError
			if !errors.As(err, &pe) || n != 0 {
				t.Fatalf("Decode = %d, %T %v; want 0 and a *codecs.ProtocolError", n, err, err)
			}
			return
		}
		if n == 0 {
			return
		}
		frame := bytes.Clone(rest[:n])
		out, err := c.Encode(&msg)
		if err != nil || !bytes.Equal(out, frame) {
			t.Fatalf("Encode of an unmodified message = %x, %v; want the frame %x", out, err, frame)
		}
		id := msg.ID
		msg.ID = 1<<31 - 1
		out, err = c.Encode(&msg)
		if err != nil {
			t.Fatalf("Encode with a new id: %v", err)
		}
		check(t, params, out, &msg, "")
		msg.ID = id
		if out, _ = c.Encode(&msg); !bytes.Equal(out, frame) {
			t.Fatalf("restoring the id gives %x, want %x", out, frame)
		}
		msg.Mutations = codecs.Metadata{{Key: "fuzz-key", Value: "fuzz-value"}}
		out, err = c.Encode(&msg)
		if err != nil {
			var pe *codecs.ProtocolError
			if errors.As(err, &pe) && (pe.Reason == reasonTooLarge || pe.Reason == reasonMutation) {
				return
			}
			t.Fatalf("Encode with a mutation: %v", err)
		}
		tr, _, _, _ := unpackFlags(msg.Private[privFlags])
		if tr == tHeader || tr == tTTHeader {
			check(t, params, out, &msg, "fuzz-value")
		}
		checkRemovals(t, params, c, &msg, frame)
		rest = rest[n:]
	}
}

// check decodes a re-encoded frame on a fresh codec of the same params (an
// auto-detecting codec may read an odd unframed non-strict message, whose
// name starts with a zero byte, as a frame length: see detect).
func check(t *testing.T, params map[string]string, out []byte, msg *codecs.Message, fuzzValue string) {
	t.Helper()
	c, _ := New(codecs.Options{MaxFrameSize: 1 << 21, Params: params})
	var got codecs.Message
	m, err := c.Decode(bytes.Clone(out), &got)
	if err != nil || m != len(out) {
		t.Fatalf("re-encoded frame %x: Decode = %d, %v", out, m, err)
	}
	if got.Type != msg.Type || got.ID != msg.ID || got.Status != msg.Status {
		t.Fatalf("re-encoded frame %x decodes as %v id %d status %v; want %v id %d status %v",
			out, got.Type, got.ID, got.Status, msg.Type, msg.ID, msg.Status)
	}
	if v, _ := got.Metadata.Get("fuzz-key"); fuzzValue != "" && v != fuzzValue {
		t.Fatalf("mutated frame %x: fuzz-key = %q", out, v)
	}
	a, _ := got.Metadata.Get("method")
	b, _ := msg.Metadata.Get("method")
	if a != b && !strings.Contains(b, ":") {
		t.Fatalf("method %q became %q", b, a)
	}
}

// checkRemovals removes every key msg shows, and one it does not: the
// frame must decode without the headers among them (the codec's own keys
// and a TTHeader ACL token stay), or, without headers, be the frame as it
// was.
func checkRemovals(t *testing.T, params map[string]string, c codecs.Codec, msg *codecs.Message, frame []byte) {
	t.Helper()
	msg.Mutations = nil
	msg.Removals = []string{"fuzz-key"}
	for _, kv := range msg.Metadata {
		msg.Removals = append(msg.Removals, kv.Key)
	}
	out, err := c.Encode(msg)
	if err != nil {
		var pe *codecs.ProtocolError
		if errors.As(err, &pe) && (pe.Reason == reasonTooLarge || pe.Reason == reasonMutation) {
			return
		}
		t.Fatalf("Encode with removals: %v", err)
	}
	tr, _, _, _ := unpackFlags(msg.Private[privFlags])
	if tr != tHeader && tr != tTTHeader {
		if !bytes.Equal(out, frame) {
			t.Fatalf("removals on a %v frame changed it: %x, want %x", tr, out, frame)
		}
		return
	}
	check(t, params, out, msg, "")
	var got codecs.Message
	c2, _ := New(codecs.Options{MaxFrameSize: 1 << 21, Params: params})
	if _, err := c2.Decode(bytes.Clone(out), &got); err != nil {
		t.Fatal(err)
	}
	for _, kv := range got.Metadata {
		switch kv.Key {
		case keyMethod, keyService, keyMessageType, keyTransport, keyProtocol, aclTokenKey:
			continue
		}
		if slices.Contains(msg.Removals, kv.Key) {
			t.Fatalf("frame with removals %x still shows %q = %q", out, kv.Key, kv.Value)
		}
	}
}
