// Package codectest is the conformance kit every codec passes. A codec's
// test calls Run with its factory and a few real frames; Run checks the
// codec contract of package codecs (framing, pass-through, mutations, id
// rewriting, local replies, limits, hostile input) without knowing the
// protocol.
//
//	func TestConformance(t *testing.T) {
//		codectest.Run(t, mycodec.New, codectest.Samples{Request: ..., ...})
//	}
package codectest

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/breeze-mesh/breeze/codecs"
)

// Samples are valid encoded frames of the protocol under test, the way real
// peers send them.
type Samples struct {
	// Request is a two-way request that carries routable metadata.
	Request []byte
	// RequestMetadata lists key/values that decoding Request must offer
	// (a subset: the codec may offer more).
	RequestMetadata codecs.Metadata
	// MutableKey is a key of RequestMetadata that a mutation can overwrite
	// (for Dubbo an attachment, not a field the codec derives elsewhere).
	// Empty when the frame has nowhere to carry key/values (Thrift's framed
	// and unframed transports): the kit then checks that Encode with
	// mutations either refuses them or sends the frame unchanged, for
	// requests and responses alike.
	//
	// With a MutableKey, mutations must also apply to Response: the kit
	// sets MutableKey and a new key on it and decodes them back. On
	// ErrorResponse they may apply or be ignored (Dubbo's error statuses
	// carry no attachments), never refused or half-applied.
	MutableKey string
	// Payload is a part of Request the codec passes through opaque, such as
	// the encoded call arguments. Mutations and id rewrites must keep it
	// byte for byte.
	Payload []byte
	// Oneway is a request that expects no response.
	Oneway []byte
	// Response is a successful response.
	Response []byte
	// ErrorResponse is a response whose Status is not StatusOK.
	ErrorResponse []byte
	// Heartbeat is a keep-alive the receiver must answer; nil when the
	// protocol has none (Thrift), which skips the heartbeat checks.
	Heartbeat []byte
	// MaxID is the largest request id the protocol carries (as the codec
	// maps it to Message.ID); 0 means math.MaxInt32.
	MaxID uint64
	// Options are used for every codec the kit makes; the oversize test
	// overrides MaxFrameSize.
	Options codecs.Options
}

// mutationKey is a key no real frame carries, so setting it adds an entry.
const mutationKey = "breeze-kit-added"

// Run runs the conformance subtests against codecs made by f.
func Run(t *testing.T, f codecs.Factory, s Samples) {
	t.Helper()
	checkSamples(t, s)
	if s.MaxID == 0 {
		s.MaxID = math.MaxInt32
	}
	k := kit{f: f, s: s}
	t.Run("decode", k.decode)
	t.Run("round_trip", k.roundTrip)
	t.Run("partial_frames", k.partialFrames)
	t.Run("frame_size", k.frameSize)
	t.Run("several_frames", k.severalFrames)
	t.Run("mutations", k.mutations)
	t.Run("response_mutations", k.responseMutations)
	t.Run("error_replies", k.errorReplies)
	t.Run("heartbeat_reply", k.heartbeatReply)
	t.Run("id_rewrite", k.idRewrite)
	t.Run("oversized_frame", k.oversized)
	t.Run("garbage", k.garbage)
	t.Run("options", k.options)
}

func checkSamples(t *testing.T, s Samples) {
	t.Helper()
	for name, b := range map[string][]byte{
		"Request": s.Request, "Oneway": s.Oneway, "Response": s.Response,
		"ErrorResponse": s.ErrorResponse, "Payload": s.Payload,
	} {
		if len(b) == 0 {
			t.Fatalf("codectest: Samples.%s is empty", name)
		}
	}
	if len(s.RequestMetadata) == 0 {
		t.Fatal("codectest: Samples.RequestMetadata is empty")
	}
	if _, ok := s.RequestMetadata.Get(s.MutableKey); !ok && s.MutableKey != "" {
		t.Fatalf("codectest: Samples.MutableKey %q is not a key of RequestMetadata", s.MutableKey)
	}
	if !bytes.Contains(s.Request, s.Payload) {
		t.Fatal("codectest: Samples.Payload is not part of Samples.Request")
	}
}

type kit struct {
	f codecs.Factory
	s Samples
}

type sample struct {
	name  string
	frame []byte
	typ   codecs.MessageType
}

func (k kit) samples() []sample {
	s := []sample{
		{"request", k.s.Request, codecs.Request},
		{"oneway", k.s.Oneway, codecs.Oneway},
		{"response", k.s.Response, codecs.Response},
		{"error_response", k.s.ErrorResponse, codecs.Response},
	}
	if k.s.Heartbeat != nil {
		s = append(s, sample{"heartbeat", k.s.Heartbeat, codecs.Heartbeat})
	}
	return s
}

func (k kit) codec(t *testing.T) codecs.Codec {
	t.Helper()
	c, err := k.f(k.s.Options)
	if err != nil {
		t.Fatalf("factory(%+v): %v", k.s.Options, err)
	}
	return c
}

// decodeAll decodes frame, which must be exactly one whole frame. It decodes
// a copy: Encode may patch the message's frame in place.
func decodeAll(t *testing.T, c codecs.Codec, frame []byte) *codecs.Message {
	t.Helper()
	buf := bytes.Clone(frame)
	msg := &codecs.Message{}
	n, err := c.Decode(buf, msg)
	if err != nil {
		t.Fatalf("Decode(%d bytes): %v", len(buf), err)
	}
	if n != len(buf) {
		t.Fatalf("Decode(%d-byte frame) = %d, want the whole frame", len(buf), n)
	}
	if len(msg.Frame) != n || &msg.Frame[0] != &buf[0] {
		t.Fatalf("Decode: msg.Frame must alias buf[:n] (len %d, n %d)", len(msg.Frame), n)
	}
	checkUniqueKeys(t, msg.Metadata)
	return msg
}

func checkUniqueKeys(t *testing.T, md codecs.Metadata) {
	t.Helper()
	seen := make(map[string]bool, len(md))
	for _, kv := range md {
		if seen[kv.Key] {
			t.Fatalf("metadata has key %q twice: %v", kv.Key, md)
		}
		seen[kv.Key] = true
	}
}

func asMap(md codecs.Metadata) map[string]string {
	m := make(map[string]string, len(md))
	for _, kv := range md {
		m[kv.Key] = kv.Value
	}
	return m
}

func (k kit) decode(t *testing.T) {
	c := k.codec(t)
	for _, sm := range k.samples() {
		msg := decodeAll(t, c, sm.frame)
		if msg.Type != sm.typ {
			t.Errorf("%s: Type = %v, want %v", sm.name, msg.Type, sm.typ)
		}
		switch sm.name {
		case "response":
			if msg.Status != codecs.StatusOK {
				t.Errorf("response: Status = %v, want StatusOK", msg.Status)
			}
		case "error_response":
			if msg.Status == codecs.StatusOK {
				t.Error("error_response: Status = StatusOK, want an error status")
			}
		case "request":
			for _, want := range k.s.RequestMetadata {
				if got, ok := msg.Metadata.Get(want.Key); !ok || got != want.Value {
					t.Errorf("request metadata %q = %q (present %v), want %q", want.Key, got, ok, want.Value)
				}
			}
		}
	}
}

func (k kit) roundTrip(t *testing.T) {
	c := k.codec(t)
	for _, sm := range k.samples() {
		msg := decodeAll(t, c, sm.frame)
		out, err := c.Encode(msg)
		if err != nil {
			t.Fatalf("%s: Encode: %v", sm.name, err)
		}
		if !bytes.Equal(out, sm.frame) {
			t.Errorf("%s: decode+encode changed the frame:\n got %x\nwant %x", sm.name, out, sm.frame)
		}
	}
}

func (k kit) partialFrames(t *testing.T) {
	c := k.codec(t)
	for _, sm := range k.samples() {
		for i := 0; i < len(sm.frame); i++ {
			var msg codecs.Message
			n, err := c.Decode(bytes.Clone(sm.frame[:i]), &msg)
			if n != 0 || err != nil {
				t.Fatalf("%s: Decode(first %d of %d bytes) = %d, %v; want 0, nil", sm.name, i, len(sm.frame), n, err)
			}
		}
		decodeAll(t, c, sm.frame)
	}
}

// frameSize: a codec's FrameSize (when it has one) is never wrong: 0 or
// the frame's length for every prefix of a frame; and a frame fed to
// codecs.Append in small pieces ends up whole, in a buffer grown at most
// once to the frame's length when the size is known.
func (k kit) frameSize(t *testing.T) {
	c := k.codec(t)
	fs, ok := c.(codecs.FrameSizer)
	for _, sm := range k.samples() {
		known := false
		if ok {
			for i := 0; i <= len(sm.frame); i++ {
				switch got := fs.FrameSize(sm.frame[:i]); got {
				case 0:
				case len(sm.frame):
					known = true
				default:
					t.Fatalf("%s: FrameSize(first %d of %d bytes) = %d", sm.name, i, len(sm.frame), got)
				}
			}
		}
		// Growths once the pending bytes tell the frame's size: at most
		// one, to exactly that size.
		const piece = 7
		var pending []byte
		grewKnown := 0
		for off := 0; off < len(sm.frame); off += piece {
			data := bytes.Clone(sm.frame[off:min(off+piece, len(sm.frame))])
			before, sized := cap(pending), ok && off > 0 && fs.FrameSize(pending) > 0
			pending = codecs.Append(c, pending, data)
			if sized && cap(pending) != before {
				grewKnown++
			}
		}
		if !bytes.Equal(pending, sm.frame) {
			t.Fatalf("%s: Append in pieces of %d gave %d bytes that differ from the frame's %d", sm.name, piece, len(pending), len(sm.frame))
		}
		if known && (grewKnown > 1 || grewKnown == 1 && cap(pending) != len(sm.frame)) {
			t.Errorf("%s: with the frame's size known the pending buffer grew %d times, to a capacity of %d; want once, to %d", sm.name, grewKnown, cap(pending), len(sm.frame))
		}
	}
}

func (k kit) severalFrames(t *testing.T) {
	c := k.codec(t)
	var buf []byte
	for _, sm := range k.samples() {
		buf = append(buf, sm.frame...)
	}
	// A partial frame at the end must wait for more bytes.
	buf = append(buf, k.s.Request[:len(k.s.Request)/2]...)
	off := 0
	for _, sm := range k.samples() {
		var msg codecs.Message
		n, err := c.Decode(buf[off:], &msg)
		if err != nil {
			t.Fatalf("%s at offset %d: %v", sm.name, off, err)
		}
		if n != len(sm.frame) {
			t.Fatalf("%s at offset %d: n = %d, want %d", sm.name, off, n, len(sm.frame))
		}
		if msg.Type != sm.typ {
			t.Fatalf("%s at offset %d: Type = %v, want %v", sm.name, off, msg.Type, sm.typ)
		}
		off += n
	}
	var msg codecs.Message
	if n, err := c.Decode(buf[off:], &msg); n != 0 || err != nil {
		t.Fatalf("trailing half frame: Decode = %d, %v; want 0, nil", n, err)
	}
}

func (k kit) mutations(t *testing.T) {
	k.checkMutations(t, sample{"request", k.s.Request, codecs.Request}, mustApply)
}

// responseMutations checks that Encode applies Mutations to responses too,
// so that a filter can add key/values to what goes back to the client.
func (k kit) responseMutations(t *testing.T) {
	k.checkMutations(t, sample{"response", k.s.Response, codecs.Response}, mustApply)
	k.checkMutations(t, sample{"error_response", k.s.ErrorResponse, codecs.Response}, mayIgnore)
}

// How a frame with room for key/values must treat mutations.
const (
	mustApply = iota
	mayIgnore // apply them, or send the frame unchanged
)

// checkMutations sets a new key and MutableKey on the decoded sm, encodes
// it and decodes the result: the two keys show with their new values, every
// other key/value is kept, and so are the type, status, id and (requests)
// the payload.
func (k kit) checkMutations(t *testing.T, sm sample, rule int) {
	t.Helper()
	c := k.codec(t)
	msg := decodeAll(t, c, sm.frame)
	if k.s.MutableKey == "" {
		// No headers: a mutation may be refused (an error the proxy turns
		// into an error reply) or ignored, but never half-applied.
		msg.Mutations = codecs.Metadata{{Key: mutationKey, Value: "kit-added-value"}}
		out, err := c.Encode(msg)
		if err == nil && !bytes.Equal(out, sm.frame) {
			t.Errorf("%s: Encode with mutations on a frame without headers changed it:\n got %x\nwant %x", sm.name, out, sm.frame)
		}
		return
	}
	before := asMap(msg.Metadata)
	id, status := msg.ID, msg.Status
	msg.Mutations = codecs.Metadata{
		{Key: mutationKey, Value: "kit-added-value"},
		{Key: k.s.MutableKey, Value: "kit-overwritten-value"},
	}
	out, err := c.Encode(msg)
	if err != nil {
		t.Fatalf("%s: Encode with mutations: %v", sm.name, err)
	}
	out = bytes.Clone(out)
	again, err := c.Encode(msg)
	if err != nil {
		t.Fatalf("%s: second Encode with the same mutations: %v", sm.name, err)
	}
	if !bytes.Equal(again, out) {
		t.Fatalf("%s: Encode is not repeatable:\nfirst  %x\nsecond %x", sm.name, out, again)
	}
	if rule == mayIgnore && bytes.Equal(out, sm.frame) {
		return
	}
	if sm.typ == codecs.Request && !bytes.Contains(out, k.s.Payload) {
		t.Errorf("%s: the mutated frame lost the payload", sm.name)
	}
	got := decodeAll(t, k.codec(t), out)
	if got.Type != sm.typ || got.ID != id || got.Status != status {
		t.Errorf("%s: mutated frame decodes as %v id %d status %v, want %v id %d status %v",
			sm.name, got.Type, got.ID, got.Status, sm.typ, id, status)
	}
	after := asMap(got.Metadata)
	want := map[string]string{}
	for key, v := range before {
		want[key] = v
	}
	want[mutationKey] = "kit-added-value"
	want[k.s.MutableKey] = "kit-overwritten-value"
	for key, v := range want {
		if after[key] != v {
			t.Errorf("%s: after mutation, metadata %q = %q, want %q", sm.name, key, after[key], v)
		}
	}
	for key, v := range after {
		if _, ok := want[key]; !ok {
			t.Errorf("%s: after mutation, unexpected metadata %q = %q", sm.name, key, v)
		}
	}
}

var errorKinds = []codecs.ErrorKind{
	codecs.ErrNoRoute, codecs.ErrNoHealthyUpstream, codecs.ErrTimeout,
	codecs.ErrOverloaded, codecs.ErrBadRequest, codecs.ErrInternal,
}

func (k kit) errorReplies(t *testing.T) {
	c := k.codec(t)
	req := decodeAll(t, c, k.s.Request)
	// A codec that never saw the connection: the proxy answers with one
	// when the connection's own failed (a recovered panic).
	fresh := k.codec(t)
	for _, id := range []uint64{req.ID, k.s.MaxID} {
		req.ID = id
		for _, kind := range errorKinds {
			reply := c.LocalReply(req, kind, "codectest: "+kind.String())
			got := decodeAll(t, k.codec(t), reply)
			if got.Type != codecs.Response || got.Status == codecs.StatusOK || got.ID != id {
				t.Errorf("LocalReply(%v) decodes as %v status %v id %d; want a response, not OK, id %d",
					kind, got.Type, got.Status, got.ID, id)
			}
			if other := fresh.LocalReply(req, kind, "codectest: "+kind.String()); !bytes.Equal(other, reply) {
				t.Errorf("LocalReply(%v) of a fresh codec differs from the decoding codec's: it must need nothing but the request\n got %x\nwant %x",
					kind, other, reply)
			}
		}
	}
}

func (k kit) heartbeatReply(t *testing.T) {
	if k.s.Heartbeat == nil {
		t.Skip("the protocol has no heartbeat")
	}
	c := k.codec(t)
	hb := decodeAll(t, c, k.s.Heartbeat)
	for _, id := range []uint64{hb.ID, k.s.MaxID} {
		hb.ID = id
		got := decodeAll(t, k.codec(t), c.HeartbeatReply(hb))
		if got.Type != codecs.HeartbeatReply || got.ID != id {
			t.Errorf("HeartbeatReply decodes as %v id %d, want heartbeat_reply id %d", got.Type, got.ID, id)
		}
	}
}

func (k kit) idRewrite(t *testing.T) {
	c := k.codec(t)
	for _, sm := range k.samples() {
		for _, newID := range []uint64{k.s.MaxID, k.s.MaxID / 3} {
			msg := decodeAll(t, c, sm.frame)
			orig := *msg
			orig.Metadata = append(codecs.Metadata(nil), msg.Metadata...)
			msg.ID = newID
			out, err := c.Encode(msg)
			if err != nil {
				t.Fatalf("%s: Encode with id %d: %v", sm.name, newID, err)
			}
			got := decodeAll(t, k.codec(t), out)
			if got.ID != newID {
				t.Errorf("%s: rewritten id decodes as %d, want %d", sm.name, got.ID, newID)
			}
			if got.Type != orig.Type || got.Status != orig.Status {
				t.Errorf("%s: id rewrite changed type/status to %v/%v", sm.name, got.Type, got.Status)
			}
			if a, b := asMap(got.Metadata), asMap(orig.Metadata); !equalMaps(a, b) {
				t.Errorf("%s: id rewrite changed metadata: %v, want %v", sm.name, a, b)
			}
			if sm.typ == codecs.Request && !bytes.Contains(out, k.s.Payload) {
				t.Errorf("%s: id rewrite lost the payload", sm.name)
			}
			msg.ID = orig.ID
			back, err := c.Encode(msg)
			if err != nil {
				t.Fatalf("%s: Encode with the original id: %v", sm.name, err)
			}
			if !bytes.Equal(back, sm.frame) {
				t.Errorf("%s: restoring the id does not restore the frame:\n got %x\nwant %x", sm.name, back, sm.frame)
			}
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func (k kit) oversized(t *testing.T) {
	limit := len(k.s.Request) / 2
	opts := k.s.Options
	opts.MaxFrameSize = limit
	c, err := k.f(opts)
	if err != nil {
		t.Fatalf("factory with MaxFrameSize %d: %v", limit, err)
	}
	// Once more than the limit is buffered the codec must say no rather
	// than ask for more: a frame never makes the proxy hold more than the limit.
	for i := limit + 1; i <= len(k.s.Request); i++ {
		var msg codecs.Message
		n, err := c.Decode(bytes.Clone(k.s.Request[:i]), &msg)
		var pe *codecs.ProtocolError
		if !errors.As(err, &pe) {
			t.Fatalf("MaxFrameSize %d, %d-byte frame, %d bytes buffered: Decode = %d, %v; want a *codecs.ProtocolError",
				limit, len(k.s.Request), i, n, err)
		}
	}
}

// garbage feeds random bytes and damaged copies of the samples. The codec
// may accept, refuse or wait, but never panic, never claim bytes it was not
// given, and anything it accepts must survive encode unchanged.
func (k kit) garbage(t *testing.T) {
	c := k.codec(t)
	rng := rand.New(rand.NewPCG(1, 2))
	try := func(buf []byte) {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("panic on input %x: %v", buf, r)
			}
		}()
		for rest := bytes.Clone(buf); len(rest) > 0; {
			var msg codecs.Message
			n, err := c.Decode(rest, &msg)
			if err != nil {
				var pe *codecs.ProtocolError
				if !errors.As(err, &pe) {
					t.Fatalf("input %x: error %T %v is not a *codecs.ProtocolError", buf, err, err)
				}
				return
			}
			if n < 0 || n > len(rest) {
				t.Fatalf("input %x: n = %d with %d bytes", buf, n, len(rest))
			}
			if n == 0 {
				return
			}
			frame := bytes.Clone(rest[:n])
			out, err := c.Encode(&msg)
			if err != nil {
				t.Fatalf("input %x: Encode of an accepted frame: %v", buf, err)
			}
			if !bytes.Equal(out, frame) {
				t.Fatalf("input %x: accepted frame changes on encode:\n got %x\nwant %x", buf, out, frame)
			}
			rest = rest[n:]
		}
	}
	for range 2000 {
		buf := make([]byte, rng.IntN(512))
		for i := range buf {
			buf[i] = byte(rng.UintN(256))
		}
		try(buf)
	}
	for _, sm := range k.samples() {
		for range 500 {
			try(damage(rng, sm.frame))
		}
	}
}

func damage(rng *rand.Rand, frame []byte) []byte {
	buf := bytes.Clone(frame)
	switch rng.IntN(4) {
	case 0: // flip a few bytes
		for range 1 + rng.IntN(4) {
			buf[rng.IntN(len(buf))] = byte(rng.UintN(256))
		}
	case 1: // random tail after a valid prefix
		buf = buf[:rng.IntN(len(buf))]
		for range rng.IntN(64) {
			buf = append(buf, byte(rng.UintN(256)))
		}
	case 2: // drop a byte range
		i := rng.IntN(len(buf))
		j := i + rng.IntN(len(buf)-i)
		buf = append(buf[:i], buf[j:]...)
	case 3: // flip one bit anywhere, including the length fields
		i := rng.IntN(len(buf))
		buf[i] ^= 1 << rng.UintN(8)
	}
	return buf
}

func (k kit) options(t *testing.T) {
	opts := k.s.Options
	opts.MaxFrameSize = -1
	if _, err := k.f(opts); err == nil {
		t.Error("factory accepts a negative MaxFrameSize")
	}
	opts = k.s.Options
	params := map[string]string{"breeze-kit-no-such-param": "1"}
	for key, v := range k.s.Options.Params {
		params[key] = v
	}
	opts.Params = params
	if _, err := k.f(opts); err == nil {
		t.Error("factory accepts an unknown param; a typo would go unnoticed")
	}
}
