package harness

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var (
	otelcolInstallOnce sync.Once
	otelcolInstallErr  error
)

// otelcolScript builds and runs the tests' collector.
func otelcolScript() string { return filepath.Join(RepoDir(), "scripts", "otelcol-peer.sh") }

// Collector is a running OpenTelemetry Collector (e2e/otelcol: an OTLP
// receiver and a file exporter) writing the spans it receives to File.
type Collector struct {
	// Addr is its OTLP/gRPC address.
	Addr string
	// File is where it writes spans, one OTLP/JSON export request a line.
	File string
	Proc *Proc
}

// StartCollector builds the collector once per machine (`make test-deps`
// does; scripts/otelcol-peer.sh) and starts it on a free loopback port,
// writing to a file of t's temporary directory. It is killed when t ends.
func StartCollector(t testing.TB) *Collector {
	t.Helper()
	otelcolInstallOnce.Do(func() {
		out, err := exec.Command("bash", otelcolScript(), "install").CombinedOutput()
		if err != nil {
			otelcolInstallErr = fmt.Errorf("%s install: %v\n%s", otelcolScript(), err, out)
		}
	})
	if otelcolInstallErr != nil {
		t.Fatal(otelcolInstallErr)
	}
	dir := t.TempDir()
	c := &Collector{Addr: Addr(FreePort(t)), File: filepath.Join(dir, "spans.jsonl")}
	// The collector's own metrics are off: their default port (8888)
	// would collide between tests and with anything else on the machine.
	cfg := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
exporters:
  file:
    path: %s
    flush_interval: 50ms
service:
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
`, c.Addr, c.File)
	cfgFile := filepath.Join(dir, "otelcol.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Proc = Start(t, "otelcol", "bash", otelcolScript(), "run", cfgFile)
	if err := WaitAccepting(c.Addr, c.Proc, 30*time.Second); err != nil {
		t.Fatalf("otelcol: %v\n%s", err, c.Proc.Output())
	}
	return c
}

// Span is one span the collector exported, with its resource's
// service.name.
type Span struct {
	Service                    string
	TraceID, SpanID, ParentID  string
	Name                       string
	Kind                       int // OTLP's: 2 server, 3 client
	Attributes                 map[string]string
	StatusCode                 int // OTLP's: 0 unset, 1 ok, 2 error
	StartUnixNano, EndUnixNano uint64
}

// OTLP span kinds.
const (
	SpanKindServer = 2
	SpanKindClient = 3
)

// Spans reads every span the collector has written so far.
func (c *Collector) Spans(t testing.TB) []Span {
	t.Helper()
	b, err := os.ReadFile(c.File)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []Span
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var req otlpRequest
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			// The exporter may be writing the last line right now.
			continue
		}
		for _, rs := range req.ResourceSpans {
			service := rs.Resource.attr("service.name")
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					sp := Span{Service: service, TraceID: normID(s.TraceID), SpanID: normID(s.SpanID), ParentID: normID(s.ParentSpanID),
						Name: s.Name, Kind: s.Kind, StatusCode: s.Status.Code, Attributes: map[string]string{}}
					fmt.Sscan(s.StartTimeUnixNano, &sp.StartUnixNano)
					fmt.Sscan(s.EndTimeUnixNano, &sp.EndUnixNano)
					for _, a := range s.Attributes {
						sp.Attributes[a.Key] = a.Value.String()
					}
					out = append(out, sp)
				}
			}
		}
	}
	return out
}

// normID: OTLP/JSON writes ids as hex; the collector's JSON marshaller
// does so too (a base64 id would be 24 or 12 characters).
func normID(s string) string {
	if len(s) == 32 || len(s) == 16 || s == "" {
		return s
	}
	if b, err := base64Decode(s); err == nil {
		return hex.EncodeToString(b)
	}
	return s
}

type otlpRequest struct {
	ResourceSpans []struct {
		Resource   otlpResource `json:"resource"`
		ScopeSpans []struct {
			Spans []struct {
				TraceID           string     `json:"traceId"`
				SpanID            string     `json:"spanId"`
				ParentSpanID      string     `json:"parentSpanId"`
				Name              string     `json:"name"`
				Kind              int        `json:"kind"`
				StartTimeUnixNano string     `json:"startTimeUnixNano"`
				EndTimeUnixNano   string     `json:"endTimeUnixNano"`
				Attributes        []otlpAttr `json:"attributes"`
				Status            struct {
					Code int `json:"code"`
				} `json:"status"`
			} `json:"spans"`
		} `json:"scopeSpans"`
	} `json:"resourceSpans"`
}

type otlpResource struct {
	Attributes []otlpAttr `json:"attributes"`
}

func (r otlpResource) attr(key string) string {
	for _, a := range r.Attributes {
		if a.Key == key {
			return a.Value.String()
		}
	}
	return ""
}

type otlpAttr struct {
	Key   string    `json:"key"`
	Value otlpValue `json:"value"`
}

type otlpValue struct {
	StringValue *string  `json:"stringValue"`
	IntValue    *string  `json:"intValue"`
	BoolValue   *bool    `json:"boolValue"`
	DoubleValue *float64 `json:"doubleValue"`
}

func (v otlpValue) String() string {
	switch {
	case v.StringValue != nil:
		return *v.StringValue
	case v.IntValue != nil:
		return *v.IntValue
	case v.BoolValue != nil:
		return fmt.Sprint(*v.BoolValue)
	case v.DoubleValue != nil:
		return fmt.Sprint(*v.DoubleValue)
	}
	return ""
}

func base64Decode(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }
