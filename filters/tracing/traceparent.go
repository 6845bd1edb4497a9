package tracing

import (
	"github.com/breeze-mesh/breeze/codecs"
	"go.opentelemetry.io/otel/trace"
)

// W3C Trace Context (https://www.w3.org/TR/trace-context/): the header
// names, and the prefix Kitex's metainfo gives a transient value in a
// TTHeader (metainfo.WithValue(ctx, "traceparent", v) travels as the
// string key "RPC_TRANSIT_traceparent"; kitex-contrib/obs-opentelemetry
// writes and reads it so).
const (
	TraceparentKey   = "traceparent"
	TracestateKey    = "tracestate"
	kitexTransient   = "RPC_TRANSIT_"
	KitexTraceparent = kitexTransient + TraceparentKey
	KitexTracestate  = kitexTransient + TracestateKey
)

// keys are the metadata keys a request's trace context travels under.
type keys struct{ parent, state string }

var (
	plainKeys = keys{TraceparentKey, TracestateKey}
	kitexKeys = keys{KitexTraceparent, KitexTracestate}
)

// keysFor picks where a request of codec carries its trace context:
// Kitex's metainfo keys in a TTHeader, the W3C names elsewhere (Dubbo
// attachments, THeader headers). Framed and unframed Thrift have no
// headers: ok is false, and the request starts a new trace.
func keysFor(codec string, md codecs.Metadata) (k keys, ok bool) {
	if codec != "thrift" {
		return plainKeys, true
	}
	switch t, _ := md.Get("transport"); t {
	case "ttheader":
		return kitexKeys, true
	case "header":
		return plainKeys, true
	}
	return keys{}, false
}

// parseTraceparent reads a W3C traceparent (version 00, or a later
// version's first four fields, as the spec asks) without allocating.
func parseTraceparent(v string) (tid trace.TraceID, sid trace.SpanID, flags trace.TraceFlags, ok bool) {
	// 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return tid, sid, 0, false
	}
	var ver [1]byte
	if !decodeHex(ver[:], v[0:2]) || ver[0] == 0xff || (ver[0] == 0 && len(v) != 55) || (ver[0] > 0 && len(v) > 55 && v[55] != '-') {
		return tid, sid, 0, false
	}
	var f [1]byte
	if !decodeHex(tid[:], v[3:35]) || !decodeHex(sid[:], v[36:52]) || !decodeHex(f[:], v[53:55]) {
		return tid, sid, 0, false
	}
	if !tid.IsValid() || !sid.IsValid() {
		return tid, sid, 0, false
	}
	return tid, sid, trace.TraceFlags(f[0]), true
}

// decodeHex decodes lower-case hex (the spec allows no upper case) into dst.
func decodeHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, ok1 := fromHex(s[2*i])
		lo, ok2 := fromHex(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func fromHex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

const hexDigits = "0123456789abcdef"

// formatTraceparent writes sc as a version-00 traceparent.
func formatTraceparent(sc trace.SpanContext) string {
	var b [55]byte
	b[0], b[1], b[2] = '0', '0', '-'
	tid, sid := sc.TraceID(), sc.SpanID()
	for i, x := range tid {
		b[3+2*i], b[4+2*i] = hexDigits[x>>4], hexDigits[x&0xf]
	}
	b[35] = '-'
	for i, x := range sid {
		b[36+2*i], b[37+2*i] = hexDigits[x>>4], hexDigits[x&0xf]
	}
	b[52] = '-'
	f := byte(sc.TraceFlags())
	b[53], b[54] = hexDigits[f>>4], hexDigits[f&0xf]
	return string(b[:])
}
