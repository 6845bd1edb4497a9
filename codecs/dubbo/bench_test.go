package dubbo

import (
	"fmt"
	"testing"
	"time"

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

// sizedRequest builds a request of about size bytes: a byte[] argument and
// attachments attachments, as a Java or dubbo-go consumer writes it.
func sizedRequest(size, attachments int) []byte {
	kv := []any{"path", "com.example.Greeter", "interface", "com.example.Greeter", "version", "1.0.0"}
	for i := len(kv) / 2; i < attachments; i++ {
		kv = append(kv, fmt.Sprintf("x-key-%02d", i), fmt.Sprintf("value-%02d", i))
	}
	body := requestBody("1.0.0", "Put", "[B", []any{[]byte{}}, hmap(kv...))
	payload := max(size-headerLen-len(body), 0)
	return frame(reqFlag, 0, 42, requestBody("1.0.0", "Put", "[B", []any{make([]byte, payload)}, hmap(kv...)))
}

// BenchmarkSizes covers small (100 B, 3 attachments), typical (1 KiB, 12)
// and large (256 KiB, 12) requests: the routing decode, the id rewrite and
// a mutation, and a full hessian2 decode of the same frame (arguments
// included, as a provider does). The decode sub-benchmark also reports
// full_decode_ratio: how many times cheaper the routing decode was than
// the full decode, measured in the same run.
func BenchmarkSizes(b *testing.B) {
	for _, sz := range []struct {
		name              string
		size, attachments int
	}{{"small", 100, 3}, {"typical", 1024, 12}, {"large", 256 << 10, 12}} {
		f := sizedRequest(sz.size, sz.attachments)
		full := func(b *testing.B) {
			b.SetBytes(int64(len(f)))
			b.ReportAllocs()
			for b.Loop() {
				fullDecode(b, f[headerLen:])
			}
		}
		b.Run(sz.name+"/decode", func(b *testing.B) {
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
			perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			// The full decode of the same frame, timed here too (nested
			// testing.Benchmark calls are not allowed) for the ratio.
			b.StopTimer()
			n := min(b.N, 2000)
			start := time.Now()
			for range n {
				fullDecode(b, f[headerLen:])
			}
			fullPerOp := float64(time.Since(start).Nanoseconds()) / float64(n)
			b.ReportMetric(fullPerOp/perOp, "full_decode_ratio")
		})
		b.Run(sz.name+"/full_decode_hessian2", full)
		for _, mut := range []bool{false, true} {
			name := sz.name + "/encode_id_rewrite"
			if mut {
				name = sz.name + "/encode_mutation"
			}
			b.Run(name, func(b *testing.B) {
				c := newCodec(b, codecs.Options{})
				msg := decode(b, c, f)
				if mut {
					msg.Mutations = codecs.Metadata{{Key: "env", Value: "canary"}}
				}
				b.SetBytes(int64(len(f)))
				b.ReportAllocs()
				for b.Loop() {
					msg.ID++
					if _, err := c.Encode(msg); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
