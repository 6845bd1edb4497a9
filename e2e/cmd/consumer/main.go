// Command consumer calls org.breeze.Greeter with dubbo-go over a direct
// dubbo:// URL, checks that every Greet answer echoes its own (unique)
// argument, and prints how many calls each provider served:
//
//	consumer -addr 127.0.0.1:20880 -n 100 -concurrency 4 -attach tenant=gold
//
// The last line is "SUMMARY {json}" for programs. It exits 1 if any call
// failed or got another call's answer, and 2, with one line on stderr, if
// it could not start (nothing to connect to at -addr, say).
//
// With -serve it instead prints "READY serve" and then makes one call per
// JSON line read on stdin, {"id":1,"method":"Greet","arg":"x","attachments":{}},
// answering each, in any order, with a line
// RESULT {"id":1,"reply":"...","error":"...","ms":3}. Tests drive dubbo-go
// this way so that it never runs inside a test binary.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"

	"github.com/breeze-mesh/breeze/e2e/internal/dubbogo"
)

// Summary is the consumer's result, printed as JSON on the SUMMARY line.
type Summary struct {
	Requests int `json:"requests"`
	OK       int `json:"ok"`
	Failed   int `json:"failed"`
	// Mismatched counts answers that did not echo the call's own argument.
	Mismatched int            `json:"mismatched"`
	Providers  map[string]int `json:"providers"`
	// Errors holds the first few distinct error messages.
	Errors    []string `json:"errors,omitempty"`
	ElapsedMS int64    `json:"elapsed_ms"`
}

type attachFlag map[string]string

func (a attachFlag) String() string { return fmt.Sprint(map[string]string(a)) }
func (a attachFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	a[k] = v
	return nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:20880", "host:port of the provider or proxy")
	n := flag.Int("n", 10, "number of calls")
	method := flag.String("method", "Greet", "Greet, Slow or Whoami")
	arg := flag.String("arg", "", "Slow: milliseconds; Greet: name prefix (each call gets a unique suffix)")
	concurrency := flag.Int("concurrency", 1, "calls in flight at once")
	version := flag.String("version", "", "Dubbo service version to ask for")
	timeout := flag.Duration("timeout", 3*time.Second, "dubbo-go per-call timeout")
	heartbeat := flag.Duration("heartbeat", 0, "dubbo-go heartbeat period; 0 keeps its default (30s)")
	connections := flag.Int("connections", 0, "TCP connections to -addr; 0 keeps dubbo-go's default (16)")
	logLevel := flag.String("log-level", "error", "dubbo-go log level")
	otlp := flag.String("otlp", "", "trace with dubbo-go's OpenTelemetry filter, exporting to this OTLP/gRPC collector host:port")
	otlpSample := flag.String("otlp-sample", "always", "with -otlp: dubbo-go's sample mode, always or never")
	quiet := flag.Bool("quiet", false, "print only the SUMMARY line")
	serveMode := flag.Bool("serve", false, "make the calls read as JSON lines on stdin (see the package doc)")
	attach := attachFlag{}
	flag.Var(attach, "attach", "attachment key=value (repeatable)")
	flag.Parse()
	if *concurrency < 1 {
		*concurrency = 1
	}
	if *arg == "" {
		switch *method {
		case "Slow":
			*arg = "10"
		default:
			*arg = "c" + strconv.Itoa(os.Getpid())
		}
	}

	if err := dubbogo.Setup(dubbogo.ConsumerOptions{HeartbeatPeriod: *heartbeat, Connections: *connections, LogLevel: *logLevel, OTLP: *otlp, OTLPSampleMode: *otlpSample}); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(2)
	}
	client, err := dubbogo.NewClient(*addr, dubbogo.ClientOptions{Version: *version, Timeout: *timeout})
	var unreachable *dubbogo.UnreachableError
	if errors.As(err, &unreachable) {
		fmt.Fprintf(os.Stderr, "consumer: %v; start a provider or Breeze there, or point -addr at one\n", err)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(2)
	}

	if *serveMode {
		serve(client, *timeout)
		return
	}
	s := run(client, *n, *concurrency, *method, *arg, attach, *timeout)
	if !*quiet {
		fmt.Printf("calls %d: ok %d, failed %d, wrong answer %d, in %dms\n",
			s.Requests, s.OK, s.Failed, s.Mismatched, s.ElapsedMS)
		names := make([]string, 0, len(s.Providers))
		for p := range s.Providers {
			names = append(names, p)
		}
		sort.Strings(names)
		for _, p := range names {
			fmt.Printf("  %-12s %6d  %5.1f%%\n", p, s.Providers[p], 100*float64(s.Providers[p])/float64(max(s.OK, 1)))
		}
		for _, e := range s.Errors {
			fmt.Println("  error:", e)
		}
	}
	b, _ := json.Marshal(s)
	fmt.Printf("SUMMARY %s\n", b)
	if s.Failed > 0 || s.Mismatched > 0 {
		os.Exit(1)
	}
}

func run(c *dubbogo.Client, n, concurrency int, method, arg string, attach map[string]string, timeout time.Duration) Summary {
	s := Summary{Requests: n, Providers: map[string]int{}}
	var mu sync.Mutex
	seen := map[string]bool{}
	jobs := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				callArg := arg
				if method == "Greet" {
					callArg = arg + "-" + strconv.Itoa(i)
				}
				// A margin over dubbo-go's own timeout: a call must end one way or another.
				ctx, cancel := context.WithTimeout(context.Background(), timeout+2*time.Second)
				r, err := c.Call(ctx, method, callArg, attach)
				cancel()
				mu.Lock()
				switch {
				case err != nil:
					s.Failed++
					if msg := err.Error(); !seen[msg] && len(s.Errors) < 5 {
						seen[msg] = true
						s.Errors = append(s.Errors, msg)
					}
				case method != "Whoami" && r.Arg != callArg:
					s.Mismatched++
					if msg := fmt.Sprintf("call %q got the answer to %q", callArg, r.Arg); len(s.Errors) < 5 {
						s.Errors = append(s.Errors, msg)
					}
				default:
					s.OK++
					s.Providers[r.Provider]++
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	s.ElapsedMS = time.Since(start).Milliseconds()
	return s
}

// Call is one line of -serve input.
type Call struct {
	ID          int64             `json:"id"`
	Method      string            `json:"method"`
	Arg         string            `json:"arg"`
	Attachments map[string]string `json:"attachments"`
}

// Result is one line of -serve output, after "RESULT ".
type Result struct {
	ID int64 `json:"id"`
	// Reply is the raw reply string; Error the call's error, if any.
	Reply string `json:"reply,omitempty"`
	Error string `json:"error,omitempty"`
	MS    int64  `json:"ms"`
}

func serve(c *dubbogo.Client, timeout time.Duration) {
	var out sync.Mutex
	emit := func(r Result) {
		b, _ := json.Marshal(r)
		out.Lock()
		fmt.Printf("RESULT %s\n", b)
		out.Unlock()
	}
	out.Lock()
	fmt.Println("READY serve")
	out.Unlock()
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var wg sync.WaitGroup
	for sc.Scan() {
		var call Call
		if err := json.Unmarshal(sc.Bytes(), &call); err != nil {
			emit(Result{ID: -1, Error: "bad call line: " + err.Error()})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), timeout+2*time.Second)
			defer cancel()
			r, err := c.Call(ctx, call.Method, call.Arg, call.Attachments)
			res := Result{ID: call.ID, MS: time.Since(start).Milliseconds()}
			if err != nil {
				res.Error = err.Error()
			} else {
				res.Reply = encodeReply(r)
			}
			emit(res)
		}()
	}
	wg.Wait()
}

func encodeReply(r greeter.Reply) string {
	b, _ := json.Marshal(r)
	return string(b)
}
