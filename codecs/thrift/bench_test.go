package thrift

import (
	"testing"

	"github.com/breeze-mesh/breeze/codecs"
)

// The benchmarks decode the Greet request the real peers wrote (a string
// and a User struct with a list, a map, a nested User, a double, a bool
// and binary; THeader and TTHeader requests also carry headers) and the
// reply to it, per transport and protocol.
//
//	go test -run '^$' -bench . -benchtime=1s -count=6 ./codecs/thrift
var benchFlavors = []string{
	"apache_framed_binary", "apache_framed_compact", "apache_unframed_binary", "apache_unframed_compact",
	"apache_header_binary", "apache_header_compact", "kitex_ttheader_binary",
}

func BenchmarkDecodeRequest(b *testing.B)  { benchDecode(b, "request") }
func BenchmarkDecodeResponse(b *testing.B) { benchDecode(b, "response") }

func benchDecode(b *testing.B, kind string) {
	for _, name := range benchFlavors {
		b.Run(name, func(b *testing.B) {
			f := testdata(b, name+"_"+kind+".bin")
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
		})
	}
}

// BenchmarkEncodeIDRewrite: the proxy's per-request encode, a new seqid and
// no mutation (ids that fit the frame's varint, as the proxy's small ids do).
func BenchmarkEncodeIDRewrite(b *testing.B) {
	for _, name := range benchFlavors {
		b.Run(name, func(b *testing.B) {
			c := newCodec(b, codecs.Options{})
			msg := decode(b, c, testdata(b, name+"_request.bin"))
			b.ReportAllocs()
			for b.Loop() {
				msg.ID = (msg.ID + 1) & 0x7f
				if _, err := c.Encode(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncodeMutation overwrites one header (a route's usual mutation)
// and rewrites the seqid.
func BenchmarkEncodeMutation(b *testing.B) {
	for _, tc := range []struct{ name, key string }{
		{"apache_header_binary", "env"}, {"apache_header_compact", "env"}, {"kitex_ttheader_binary", "RPC_TRANSIT_env"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := newCodec(b, codecs.Options{})
			msg := decode(b, c, testdata(b, tc.name+"_request.bin"))
			msg.Mutations = codecs.Metadata{{Key: tc.key, Value: "canary"}}
			b.ReportAllocs()
			for b.Loop() {
				msg.ID = (msg.ID + 1) & 0x7f
				if _, err := c.Encode(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
