package dubbo

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/breeze-mesh/breeze/codecs"
)

// seedFrames are the real frames under testdata: written by dubbo-go's
// codec, captured from dubbo-go peers (real/) and from Apache Dubbo Java
// 3.3.6 (java/, by e2e/javainterop).
func seedFrames(f *testing.F) []string {
	var files []string
	for _, pattern := range []string{"testdata/*.bin", "testdata/real/*.bin", "testdata/java/*.bin"} {
		m, err := filepath.Glob(pattern)
		if err != nil || len(m) == 0 {
			f.Fatalf("no seed frames %s: %v", pattern, err)
		}
		files = append(files, m...)
	}
	return files
}

// FuzzDecode feeds arbitrary bytes to Decode. Seeds: every real frame
// under testdata plus a few shapes the clients do not write.
func FuzzDecode(f *testing.F) {
	for _, name := range seedFrames(f) {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(frame(reqFlag, 0, 1, requestBody("", "$invoke", "Ljava/lang/String;", []any{"real"},
		cat([]byte{'M'}, hess("java.util.HashMap", "k", int32(1), "l", []any{"x"}), []byte{'Z'}))))
	f.Add(frame(onewayFlag|flagEvent, 0, 1, hess("R")))
	f.Add(frame(respFlag, 20, 1, cat(hess(int32(3), "boom"), hmap("k", "v"))))

	f.Fuzz(checkDecode)
}

// FuzzBody fuzzes bodies behind a consistent header, so that the fuzzer
// spends its time in the hessian2 scanner rather than on length fields.
func FuzzBody(f *testing.F) {
	for _, name := range seedFrames(f) {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[2], b[3], b[headerLen:])
	}
	f.Fuzz(func(t *testing.T, flag, status byte, body []byte) {
		checkDecode(t, frame(flag, status, 1, body))
	})
}

// checkDecode asserts what must hold for any input: no panic, n within the
// input, errors are ProtocolErrors, an accepted frame encodes unchanged,
// and a mutation yields a frame that decodes and shows it.
func checkDecode(t *testing.T, data []byte) {
	c, err := New(codecs.Options{MaxFrameSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var msg codecs.Message
	n, err := c.Decode(data, &msg)
	if n < 0 || n > len(data) {
		t.Fatalf("n = %d for %d bytes", n, len(data))
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
	if len(msg.Frame) != n {
		t.Fatalf("len(Frame) = %d, n = %d", len(msg.Frame), n)
	}
	frame := bytes.Clone(data[:n])
	out, err := c.Encode(&msg)
	if err != nil || !bytes.Equal(out, frame) {
		t.Fatalf("Encode of an unmodified message = %x, %v; want the frame %x", out, err, frame)
	}

	// A mutation must give a frame that decodes and shows it.
	msg.Mutations = codecs.Metadata{{Key: "fuzz-key", Value: "fuzz-value"}}
	out, err = c.Encode(&msg)
	if err != nil {
		var pe *codecs.ProtocolError
		if errors.As(err, &pe) && pe.Reason == reasonTooLarge {
			return
		}
		t.Fatalf("Encode with a mutation: %v", err)
	}
	if msg.Private[privAttEnd] == 0 {
		return // no attachments to mutate: the frame is passed as is
	}
	var got codecs.Message
	m, err := c.Decode(bytes.Clone(out), &got)
	if err != nil || m != len(out) {
		t.Fatalf("mutated frame %x: Decode = %d, %v", out, m, err)
	}
	if v, _ := got.Metadata.Get("fuzz-key"); v != "fuzz-value" || got.Type != msg.Type || got.ID != msg.ID {
		t.Fatalf("mutated frame %x decodes as %v id %d, fuzz-key %q", out, got.Type, got.ID, v)
	}

	// Removing every key the frame showed must give a frame that decodes
	// without those whose values were scalars (all the codec offers are).
	msg.Mutations = nil
	for _, kv := range msg.Metadata {
		msg.Removals = append(msg.Removals, kv.Key)
	}
	msg.Removals = append(msg.Removals, "fuzz-key")
	// The codec may have patched the frame in place: start from the input.
	var again codecs.Message
	if _, err := c.Decode(bytes.Clone(data[:n]), &again); err != nil {
		t.Fatalf("second decode: %v", err)
	}
	again.Removals = msg.Removals
	out, err = c.Encode(&again)
	if err != nil {
		var pe *codecs.ProtocolError
		if errors.As(err, &pe) && pe.Reason == reasonTooLarge {
			return
		}
		t.Fatalf("Encode with removals: %v", err)
	}
	got.Reset()
	if m, err := c.Decode(bytes.Clone(out), &got); err != nil || m != len(out) {
		t.Fatalf("frame with removals %x: Decode = %d, %v", out, m, err)
	}
	for _, kv := range got.Metadata {
		if slices.Contains(again.Removals, kv.Key) && attachmentKey(kv.Key) {
			t.Fatalf("frame with removals %x still shows %q = %q", out, kv.Key, kv.Value)
		}
	}
}

// attachmentKey reports whether a metadata key may come from attachments
// only: the body's fields (dubbo, interface, version, method,
// parameter_types) are not attachments and stay.
func attachmentKey(k string) bool {
	switch k {
	case keyDubbo, keyInterface, keyVersion, keyMethod, keyParamTypes:
		return false
	}
	return true
}
