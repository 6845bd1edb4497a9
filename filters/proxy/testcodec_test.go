package proxy

import (
	"encoding/binary"
	"slices"
	"strconv"

	"github.com/breeze-mesh/breeze/codecs"
)

// tframe is a minimal binary protocol for the proxy's own tests, so that
// they exercise the proxy's mechanics (routing, id rewriting, pools,
// timeouts) independently of any real protocol; e2e/ covers Dubbo with
// real peers.
//
//	u32 length of the rest | u8 type | u64 id | u8 status | u16 count | count × (u16 len, key, u16 len, value) | body
const tframeName = "tframe"

func init() {
	codecs.Register(tframeName, func(o codecs.Options) (codecs.Codec, error) {
		max := o.MaxFrameSize
		if max == 0 {
			max = 1 << 20
		}
		return &tcodec{max: max}, nil
	})
}

// A frame's "panic" metadata makes the codec panic, as a codec with a bug
// would: "decode" while decoding it; "poison" too, and the instance is
// then broken: every later call on it panics (a real codec's state after
// a panic half-way through a frame); "encode" when the frame is encoded.
type tcodec struct {
	max      int
	poisoned bool
}

func (c *tcodec) check() {
	if c.poisoned {
		panic("tframe: codec used after it panicked")
	}
}

type tmsg struct {
	typ    codecs.MessageType
	id     uint64
	status codecs.ResponseStatus
	md     []codecs.KV
	body   string
}

func tencode(m tmsg) []byte {
	b := make([]byte, 4, 64)
	b = append(b, byte(m.typ))
	b = binary.BigEndian.AppendUint64(b, m.id)
	b = append(b, byte(m.status))
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.md)))
	for _, kv := range m.md {
		b = binary.BigEndian.AppendUint16(b, uint16(len(kv.Key)))
		b = append(b, kv.Key...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(kv.Value)))
		b = append(b, kv.Value...)
	}
	b = append(b, m.body...)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// tdecode parses one whole frame (tests only; no bounds games).
func tdecode(b []byte) (tmsg, int, error) {
	var c tcodec
	c.max = 1 << 30
	var m codecs.Message
	n, err := c.Decode(b, &m)
	if err != nil || n == 0 {
		return tmsg{}, n, err
	}
	return tmsg{typ: m.Type, id: m.ID, status: m.Status, md: m.Metadata, body: string(m.Frame[m.Private[0]:n])}, n, nil
}

func (c *tcodec) Decode(buf []byte, m *codecs.Message) (int, error) {
	c.check()
	if len(buf) < 4 {
		return 0, nil
	}
	l := int(binary.BigEndian.Uint32(buf))
	if l > c.max {
		return 0, codecs.Errorf("frame_too_large", "%d bytes", l)
	}
	if l < 12 {
		return 0, codecs.Errorf("bad_length", "%d", l)
	}
	if len(buf) < 4+l {
		return 0, nil
	}
	f := buf[:4+l]
	m.Type = codecs.MessageType(f[4])
	if m.Type < codecs.Request || m.Type > codecs.GoAway {
		return 0, codecs.Errorf("bad_type", "%d", f[4])
	}
	m.ID = binary.BigEndian.Uint64(f[5:])
	m.Status = codecs.ResponseStatus(f[13])
	p := 16
	for range binary.BigEndian.Uint16(f[14:]) {
		var k, v string
		var ok bool
		if k, p, ok = tstr(f, p); !ok {
			return 0, codecs.Errorf("truncated", "key")
		}
		if v, p, ok = tstr(f, p); !ok {
			return 0, codecs.Errorf("truncated", "value")
		}
		m.Metadata = append(m.Metadata, codecs.KV{Key: k, Value: v})
	}
	m.Frame = f
	m.Private[0] = p
	if v, ok := m.Metadata.Get("code"); ok {
		code, _ := strconv.Atoi(v)
		m.Code = uint32(code)
	}
	switch v, _ := m.Metadata.Get("panic"); v {
	case "decode":
		panic("tframe: asked to panic")
	case "poison":
		c.poisoned = true
		panic("tframe: asked to panic and stay broken")
	}
	return len(f), nil
}

func tstr(f []byte, p int) (string, int, bool) {
	if p+2 > len(f) {
		return "", p, false
	}
	n := int(binary.BigEndian.Uint16(f[p:]))
	p += 2
	if p+n > len(f) {
		return "", p, false
	}
	return string(f[p : p+n]), p + n, true
}

func (c *tcodec) Encode(m *codecs.Message) ([]byte, error) {
	c.check()
	if v, _ := m.Metadata.Get("panic"); v == "encode" {
		panic("tframe: asked to panic encoding")
	}
	if len(m.Mutations) == 0 && len(m.Removals) == 0 {
		binary.BigEndian.PutUint64(m.Frame[5:], m.ID)
		return m.Frame, nil
	}
	var md codecs.Metadata
	for _, kv := range m.Metadata {
		if !slices.Contains(m.Removals, kv.Key) {
			md = append(md, kv)
		}
	}
	for _, kv := range m.Mutations {
		md.Set(kv.Key, kv.Value)
	}
	return tencode(tmsg{typ: m.Type, id: m.ID, status: m.Status, md: md, body: string(m.Frame[m.Private[0]:])}), nil
}

func (c *tcodec) LocalReply(req *codecs.Message, kind codecs.ErrorKind, detail string) []byte {
	c.check()
	return tencode(tmsg{typ: codecs.Response, id: req.ID, status: codecs.StatusError,
		md: []codecs.KV{{Key: "error", Value: kind.String()}}, body: detail})
}

func (c *tcodec) HeartbeatReply(hb *codecs.Message) []byte {
	c.check()
	return tencode(tmsg{typ: codecs.HeartbeatReply, id: hb.ID})
}

func (c *tcodec) Heartbeat(id uint64) []byte {
	return tencode(tmsg{typ: codecs.Heartbeat, id: id})
}

// IsGatewayError implements codecs.GatewayErrors: codes 503 and 504, as
// a test convention.
func (c *tcodec) IsGatewayError(code uint32) bool { return code == 503 || code == 504 }

// RequestKeys implements codecs.Describer, as Dubbo's codec does.
func (c *tcodec) RequestKeys() (service, method string) { return "interface", "method" }
