package dubbo

import (
	"testing"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/breeze-mesh/breeze/codecs"
)

// The benchmarks use request.bin: the 1018-byte request dubbo-go writes for
// GetUser(User, String, int) with 12 attachments.

func BenchmarkDecodeRequest(b *testing.B) {
	f := testdata(b, "request.bin")
	c := newCodec(b, codecs.Options{})
	var msg codecs.Message
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		msg.Reset()
		if _, err := c.Decode(f, &msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeResponse(b *testing.B) {
	f := testdata(b, "response.bin")
	c := newCodec(b, codecs.Options{})
	var msg codecs.Message
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		msg.Reset()
		if _, err := c.Decode(f, &msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeIDRewrite(b *testing.B) {
	c := newCodec(b, codecs.Options{})
	msg := decode(b, c, testdata(b, "request.bin"))
	b.ReportAllocs()
	for b.Loop() {
		msg.ID++
		if _, err := c.Encode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeMutation overwrites one attachment (the usual header
// mutation of a route) and rewrites the id.
func BenchmarkEncodeMutation(b *testing.B) {
	c := newCodec(b, codecs.Options{})
	msg := decode(b, c, testdata(b, "request.bin"))
	msg.Mutations = codecs.Metadata{{Key: "env", Value: "canary"}}
	b.ReportAllocs()
	for b.Loop() {
		msg.ID++
		if _, err := c.Encode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFullDecodeHessian2 decodes the same request body the way
// dubbo-go's provider does: every value, arguments included, with
// dubbo-go-hessian2. Compare with BenchmarkDecodeRequest.
func BenchmarkFullDecodeHessian2(b *testing.B) {
	body := testdata(b, "request.bin")[headerLen:]
	b.SetBytes(int64(len(body) + headerLen))
	b.ReportAllocs()
	for b.Loop() {
		d := hessian.NewDecoder(body)
		for range 5 + 3 + 1 { // header strings, 3 arguments, attachments
			if _, err := d.Decode(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
