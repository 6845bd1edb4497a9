package accesslog

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
)

// DefaultFormat is Envoy's default access log format adapted to RPC:
// Envoy's `"METHOD PATH PROTOCOL"` becomes the RPC method, the service and
// the codec; the HTTP headers it quotes become the caller's address, the
// request id and the trace id; Istio's tail (cluster, route) follows.
const DefaultFormat = `[%START_TIME%] "%METHOD% %SERVICE% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% ` +
	`%BYTES_RECEIVED% %BYTES_SENT% %DURATION% "%DOWNSTREAM_REMOTE_ADDRESS%" "%REQUEST_ID%" "%TRACE_ID%" ` +
	`"%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% %ROUTE_NAME%` + "\n"

// op is one command operator.
type op uint8

const (
	opLiteral op = iota
	opStartTime
	opDuration
	opResponseCode
	opResponseFlags
	opResponseCodeDetails
	opUpstreamHost
	opUpstreamCluster
	opRouteName
	opBytesReceived
	opBytesSent
	opDownstreamRemoteAddress
	opDownstreamRemoteAddressWithoutPort
	opAttemptCount
	opProtocol
	opService
	opMethod
	opVersion
	opRequestID
	opTraceID
	opRequestProperty
)

// operators are the command operators by name: Envoy's where Envoy has
// one (its HTTP and stream-info operators, and generic_proxy's %METHOD%,
// %HOST%/%PATH%, %PROTOCOL%, %REQUEST_PROPERTY(key)%,
// %GENERIC_RESPONSE_CODE%), Breeze's own for what an RPC has and Envoy
// names nowhere (%SERVICE%, %VERSION%, %REQUEST_ID%).
var operators = map[string]op{
	"START_TIME":                             opStartTime,
	"DURATION":                               opDuration,
	"RESPONSE_CODE":                          opResponseCode,
	"GENERIC_RESPONSE_CODE":                  opResponseCode,
	"RESPONSE_FLAGS":                         opResponseFlags,
	"RESPONSE_CODE_DETAILS":                  opResponseCodeDetails,
	"UPSTREAM_HOST":                          opUpstreamHost,
	"UPSTREAM_CLUSTER":                       opUpstreamCluster,
	"ROUTE_NAME":                             opRouteName,
	"BYTES_RECEIVED":                         opBytesReceived,
	"BYTES_SENT":                             opBytesSent,
	"DOWNSTREAM_REMOTE_ADDRESS":              opDownstreamRemoteAddress,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": opDownstreamRemoteAddressWithoutPort,
	"UPSTREAM_REQUEST_ATTEMPT_COUNT":         opAttemptCount,
	"PROTOCOL":                               opProtocol,
	"SERVICE":                                opService,
	"HOST":                                   opService,
	"PATH":                                   opService,
	"METHOD":                                 opMethod,
	"VERSION":                                opVersion,
	"REQUEST_ID":                             opRequestID,
	"TRACE_ID":                               opTraceID,
	"REQUEST_PROPERTY":                       opRequestProperty,
	"REQ":                                    opRequestProperty,
}

// numeric operators are written as JSON numbers when alone in a value.
func (o op) numeric() bool {
	switch o {
	case opDuration, opResponseCode, opBytesReceived, opBytesSent, opAttemptCount, opRequestID:
		return true
	}
	return false
}

// OperatorNames lists the operators, sorted, for errors and docs.
func OperatorNames() []string {
	names := make([]string, 0, len(operators))
	for n := range operators {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// part is a literal or one operator of a parsed format.
type part struct {
	op  op
	lit string // opLiteral: the text; opRequestProperty: the key
	max int    // :N, truncate the value to N bytes; 0: no limit
}

// format is a parsed format string.
type format []part

// parseFormat parses a format string with Envoy's syntax: %OP%,
// %OP(arg)%, %OP(arg):N% (the value cut to N bytes), %% for a percent sign.
func parseFormat(s string) (format, error) {
	var f format
	lit := strings.Builder{}
	flush := func() {
		if lit.Len() > 0 {
			f = append(f, part{op: opLiteral, lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c != '%' {
			lit.WriteByte(c)
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			lit.WriteByte('%')
			i += 2
			continue
		}
		p, n, err := parseOperator(s[i:])
		if err != nil {
			return nil, fmt.Errorf("at offset %d: %w", i, err)
		}
		flush()
		f = append(f, p)
		i += n
	}
	flush()
	return f, nil
}

// parseOperator parses the operator s starts with ("%...%") and returns
// how many bytes it took.
func parseOperator(s string) (part, int, error) {
	j := 1
	for j < len(s) && (s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9' || s[j] == '_') {
		j++
	}
	name := s[1:j]
	if name == "" {
		return part{}, 0, fmt.Errorf("a %% starts no operator: write %%%% for a percent sign, or %%OPERATOR%% (operators: %s)", strings.Join(OperatorNames(), ", "))
	}
	var arg string
	hasArg := false
	if j < len(s) && s[j] == '(' {
		end := strings.IndexByte(s[j:], ')')
		if end < 0 {
			return part{}, 0, fmt.Errorf("%%%s(: no closing parenthesis", name)
		}
		arg, hasArg = s[j+1:j+end], true
		j += end + 1
	}
	max := 0
	if j < len(s) && s[j] == ':' {
		k := j + 1
		for k < len(s) && s[k] >= '0' && s[k] <= '9' {
			k++
		}
		n, err := strconv.Atoi(s[j+1 : k])
		if err != nil || n <= 0 {
			return part{}, 0, fmt.Errorf("%%%s: the length after ':' must be a positive number", name)
		}
		max, j = n, k
	}
	if j >= len(s) || s[j] != '%' {
		return part{}, 0, fmt.Errorf("%%%s: no closing %%", name)
	}
	o, ok := operators[name]
	if !ok {
		if name == "METADATA" || name == "DYNAMIC_METADATA" {
			return part{}, 0, fmt.Errorf("%%%s%%: Envoy's %%METADATA%% reads dynamic metadata, which Breeze has none of: a request's key is %%REQUEST_PROPERTY(key)%%", name)
		}
		return part{}, 0, fmt.Errorf("%%%s%%: unknown operator (operators: %s)", name, strings.Join(OperatorNames(), ", "))
	}
	switch {
	case o == opRequestProperty && (!hasArg || arg == ""):
		return part{}, 0, fmt.Errorf("%%%s%%: name the request's key: %%%s(key)%%", name, name)
	case o != opRequestProperty && hasArg:
		return part{}, 0, fmt.Errorf("%%%s(%s)%%: %s takes no argument", name, arg, name)
	}
	return part{op: o, lit: arg, max: max}, j + 1, nil
}

// env is what formatting needs to know of the proxy.
type env struct {
	protocol              string
	serviceKey, methodKey string
	replies               codecs.ReplyCoder
}

// value appends the operator's value to dst; ok false when it has none
// (written "-" in text, null in JSON). It appends the raw value: escaping
// is the caller's.
func (p *part) value(dst []byte, s *filter.Stream, e *env) (out []byte, ok bool) {
	switch p.op {
	case opLiteral:
		return append(dst, p.lit...), true
	case opStartTime:
		// Envoy's default: %Y-%m-%dT%H:%M:%S.%3fZ, UTC.
		return s.Start.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z"), true
	case opDuration:
		return strconv.AppendInt(dst, int64(s.End.Sub(s.Start)/time.Millisecond), 10), true
	case opResponseCode:
		c, ok := responseCode(s, e)
		if !ok {
			return dst, false
		}
		return strconv.AppendUint(dst, uint64(c), 10), true
	case opResponseFlags:
		return appendFlags(dst, s.Outcome.Flags), true
	case opResponseCodeDetails:
		return str(dst, detailOf(&s.Outcome))
	case opUpstreamHost:
		return str(dst, s.Upstream)
	case opUpstreamCluster:
		return str(dst, s.Cluster)
	case opRouteName:
		if s.Route == nil {
			return dst, false
		}
		return str(dst, s.Route.RouteName())
	case opBytesReceived:
		return strconv.AppendInt(dst, int64(s.BytesIn), 10), true
	case opBytesSent:
		return strconv.AppendInt(dst, int64(s.BytesOut), 10), true
	case opDownstreamRemoteAddress:
		if s.Peer == nil || !s.Peer.Addr.IsValid() {
			return dst, false
		}
		return s.Peer.Addr.AppendTo(dst), true
	case opDownstreamRemoteAddressWithoutPort:
		if s.Peer == nil || !s.Peer.Addr.IsValid() {
			return dst, false
		}
		return s.Peer.Addr.Addr().AppendTo(dst), true
	case opAttemptCount:
		return strconv.AppendInt(dst, int64(s.Attempts), 10), true
	case opProtocol:
		return str(dst, e.protocol)
	case opService:
		return metadata(dst, s, e.serviceKey)
	case opMethod:
		return metadata(dst, s, e.methodKey)
	case opVersion:
		return metadata(dst, s, "version")
	case opRequestID:
		return strconv.AppendUint(dst, s.Request.ID, 10), true
	case opTraceID:
		tp, _ := s.Request.Metadata.Get("traceparent")
		return str(dst, TraceID(tp))
	case opRequestProperty:
		return metadata(dst, s, p.lit)
	}
	return dst, false
}

func str(dst []byte, v string) ([]byte, bool) {
	if v == "" {
		return dst, false
	}
	return append(dst, v...), true
}

func metadata(dst []byte, s *filter.Stream, key string) ([]byte, bool) {
	if key == "" {
		return dst, false
	}
	v, ok := s.Request.Metadata.Get(key)
	if !ok {
		return dst, false
	}
	return append(dst, v...), true
}

// responseCode is %RESPONSE_CODE%: the upstream's status in the
// protocol's numbers, the status of the reply Breeze answered with, or 0
// when the client got no response (a oneway, a client gone), as Envoy
// logs a stream without one. ok false: a local reply of a codec that does
// not say its status.
func responseCode(s *filter.Stream, e *env) (uint32, bool) {
	o := &s.Outcome
	switch {
	case o.Responded:
		return o.Code, true
	case o.LocalReply != 0 && s.Request.Type != codecs.Oneway:
		if e.replies == nil {
			return 0, false
		}
		return e.replies.ReplyCode(o.LocalReply), true
	}
	return 0, true
}

// detailOf is %RESPONSE_CODE_DETAILS%: why the proxy answered itself (the
// outcome's detail), "via_upstream" for a relayed response, as Envoy
// writes them. The detail's spaces become underscores there (below), as
// Envoy's details have none.
func detailOf(o *filter.Outcome) string {
	if o.Responded {
		return "via_upstream"
	}
	return o.Detail
}

// appendFlags is filter.Flag.String without its allocation.
func appendFlags(dst []byte, f filter.Flag) []byte {
	if f == 0 {
		return append(dst, '-')
	}
	first := true
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			if !first {
				dst = append(dst, ',')
			}
			dst = append(dst, n...)
			first = false
		}
	}
	return dst
}

// flagNames are filter.Flag's letters, bit by bit, as its String writes
// each alone (a bit past the last flag writes nothing).
var flagNames = func() []string {
	var names []string
	for i := 0; ; i++ {
		n := filter.Flag(1 << i).String()
		if n == "" || n == "-" || strings.Contains(n, ",") || i >= 16 {
			return names
		}
		names = append(names, n)
	}
}()

// flagByName is the flag an Envoy letter names.
func flagByName(name string) (filter.Flag, bool) {
	for i, n := range flagNames {
		if n == name {
			return filter.Flag(1 << i), true
		}
	}
	return 0, false
}

// TraceID is the trace id of a W3C traceparent header value
// ("00-<32 hex>-<16 hex>-<2 hex>"), "" when v is not a valid one (or its
// trace id is all zeros, which the spec calls invalid).
func TraceID(v string) string {
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' || (len(v) > 55 && v[55] != '-') {
		return ""
	}
	if !lowerHex(v[0:2]) || v[0:2] == "ff" || !lowerHex(v[3:35]) || !lowerHex(v[36:52]) || !lowerHex(v[53:55]) {
		return ""
	}
	id := v[3:35]
	if id == "00000000000000000000000000000000" {
		return ""
	}
	return id
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// appendText appends f's line to dst, as Envoy writes a text format: a
// missing value is "-". Values are written as they are, but for control
// characters (a client's newline must not start a line of its own),
// written \xHH, and for the spaces of %RESPONSE_CODE_DETAILS%, written _.
func (f format) appendText(dst []byte, s *filter.Stream, e *env) []byte {
	for i := range f {
		p := &f[i]
		if p.op == opLiteral {
			dst = append(dst, p.lit...)
			continue
		}
		start := len(dst)
		var ok bool
		dst, ok = p.value(dst, s, e)
		if !ok {
			dst = append(dst[:start], '-')
			continue
		}
		dst = truncate(dst, start, p.max)
		dst = escapeText(dst, start, p.op == opResponseCodeDetails)
	}
	return dst
}

// truncate cuts dst[start:] to max bytes (0: no limit), never inside a
// UTF-8 sequence.
func truncate(dst []byte, start, max int) []byte {
	if max <= 0 || len(dst)-start <= max {
		return dst
	}
	end := start + max
	for end > start && !utf8.RuneStart(dst[end]) {
		end--
	}
	return dst[:end]
}

const hexDigits = "0123456789abcdef"

// escapeText rewrites dst[start:] in place when it holds a control
// character (or, with underscores, a space): the common value has none and
// costs one scan.
func escapeText(dst []byte, start int, underscores bool) []byte {
	i := start
	for ; i < len(dst); i++ {
		if c := dst[i]; c < 0x20 || c == 0x7f || underscores && c == ' ' {
			break
		}
	}
	if i == len(dst) {
		return dst
	}
	// Rare: rebuild the tail after the first byte to change.
	tail := append([]byte(nil), dst[i:]...)
	dst = dst[:i]
	for _, c := range tail {
		switch {
		case underscores && c == ' ':
			dst = append(dst, '_')
		case c < 0x20 || c == 0x7f:
			dst = append(dst, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// jsonField is one key of a JSON format, its key pre-encoded.
type jsonField struct {
	// prefix is `"key":` (with a leading comma for all but the first).
	prefix string
	value  format
}

// jsonFormat is a parsed json_format: its fields sorted by key.
type jsonFormat []jsonField

func parseJSONFormat(m map[string]string) (jsonFormat, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var jf jsonFormat
	for i, k := range keys {
		v, err := parseFormat(m[k])
		if err != nil {
			return nil, &keyError{key: k, value: m[k], err: err}
		}
		prefix := ""
		if i > 0 {
			prefix = ","
		}
		prefix += string(appendJSONString(nil, k)) + ":"
		jf = append(jf, jsonField{prefix: prefix, value: v})
	}
	return jf, nil
}

// keyError is a bad value of a json_format key.
type keyError struct {
	key, value string
	err        error
}

func (e *keyError) Error() string {
	return fmt.Sprintf("[%s]: %q: %v", e.key, e.value, e.err)
}

// appendJSON appends one JSON object and a newline.
func (jf jsonFormat) appendJSON(dst []byte, s *filter.Stream, e *env) []byte {
	dst = append(dst, '{')
	for i := range jf {
		fl := &jf[i]
		dst = append(dst, fl.prefix...)
		v := fl.value
		if len(v) == 1 && v[0].op != opLiteral {
			// One operator alone: typed, null without a value.
			p := &v[0]
			start := len(dst)
			var ok bool
			if p.op.numeric() && p.max == 0 {
				if dst, ok = p.value(dst, s, e); !ok {
					dst = append(dst[:start], "null"...)
				}
				continue
			}
			dst, ok = p.value(dst, s, e)
			if !ok {
				dst = append(dst[:start], "null"...)
				continue
			}
			dst = truncate(dst, start, p.max)
			dst = quoteTail(dst, start, p.op == opResponseCodeDetails)
			continue
		}
		start := len(dst)
		dst = v.appendText(dst, s, e)
		dst = quoteTail(dst, start, false)
	}
	return append(dst, '}', '\n')
}

// quoteTail turns the raw value dst[start:] into a JSON string in place.
// The common value (printable ASCII without quote or backslash) only moves
// one byte to the right.
func quoteTail(dst []byte, start int, underscores bool) []byte {
	clean := true
	for i := start; i < len(dst); i++ {
		if c := dst[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || underscores && c == ' ' {
			clean = false
			break
		}
	}
	if clean {
		dst = append(dst, 0, '"')
		copy(dst[start+1:], dst[start:len(dst)-2])
		dst[start] = '"'
		return dst
	}
	raw := append([]byte(nil), dst[start:]...)
	if underscores {
		for i, c := range raw {
			if c == ' ' {
				raw[i] = '_'
			}
		}
	}
	return appendJSONString(dst[:start], string(raw))
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 as U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == 0x7f:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+n]...)
		}
		i += n
	}
	return append(dst, '"')
}
