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

// sizedCall is a strict-binary CALL "put" of about size bytes (a struct
// with one binary field), framed or not.
func sizedCall(size int, framed bool) []byte {
	msg := []byte{0x80, 0x01, 0x00, 0x01, 0, 0, 0, 3, 'p', 'u', 't', 0, 0, 0, 7}
	payload := max(size-len(msg)-12, 1)
	msg = append(msg, 11, 0, 1, byte(payload>>24), byte(payload>>16), byte(payload>>8), byte(payload))
	msg = append(msg, make([]byte, payload)...)
	msg = append(msg, 0) // struct stop
	if !framed {
		return msg
	}
	n := len(msg)
	return append([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, msg...)
}

// BenchmarkSizes: decode and seqid rewrite of small (100 B), typical
// (1 KiB) and large (256 KiB) calls, framed (the length prefix bounds the
// frame) and unframed (the struct is skipped to find the end). The full
// decode with Apache's generated code, for the ratio, is in
// testdata/peers (BenchmarkFullDecodeApache).
func BenchmarkSizes(b *testing.B) {
	for _, sz := range []struct {
		name string
		size int
	}{{"small", 100}, {"typical", 1024}, {"large", 256 << 10}} {
		for _, framed := range []bool{true, false} {
			tr := "framed_binary"
			if !framed {
				tr = "unframed_binary"
			}
			f := sizedCall(sz.size, framed)
			b.Run(sz.name+"/"+tr+"/decode", func(b *testing.B) {
				c := newCodec(b, codecs.Options{})
				var msg codecs.Message
				b.SetBytes(int64(len(f)))
				b.ReportAllocs()
				for b.Loop() {
					msg.Reset()
					if n, err := c.Decode(f, &msg); err != nil || n != len(f) {
						b.Fatal(n, err)
					}
				}
			})
			b.Run(sz.name+"/"+tr+"/encode_id_rewrite", func(b *testing.B) {
				c := newCodec(b, codecs.Options{})
				msg := decode(b, c, f)
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
}
