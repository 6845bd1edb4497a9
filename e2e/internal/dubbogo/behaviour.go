package dubbogo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"dubbo.apache.org/dubbo-go/v3/protocol"
	"dubbo.apache.org/dubbo-go/v3/remoting"
)

// Behaviour is what a test controls in a running provider, over HTTP
// (ServeControl): it counts every execution of every method, holds the
// calls of a gated method until the test releases them, and answers a
// chosen share of a method's calls with a failure. Tests use it to count
// instead of timing: "N calls are executing now", "this call ran once".
//
// A provider process is a test peer: a mutex and maps per call are fine.
type Behaviour struct {
	mu sync.Mutex
	// executions counts calls that reached the method, by method; args
	// counts them by method and argument (tests give every call a unique
	// argument, so a count of 2 is a call that ran twice).
	executions map[string]int
	args       map[string]map[string]int
	// gates, by method, hold calls until the test releases them; no
	// entry: calls run at once.
	gates map[string]*gate
	// held are the arguments of the calls waiting at a gate now, by method.
	held map[string][]string
	// failures, by method: the pattern its executions follow, in order.
	failures map[string]*failure
}

// gate holds the calls of a method until open is closed: all of them, or
// the first max (0: no limit).
type gate struct {
	open     chan struct{}
	max, got int
}

// failure cycles a pattern over a method's executions, one character per
// execution: '.' answers normally; 'E' with the Dubbo status of the rule
// (StatusError); 'X' with a plain Go error, which dubbo-go sends as an
// exception in a status-20 response; 'P' panics in the method.
type failure struct {
	pattern string
	status  byte
	next    int
}

// NewBehaviour returns a Behaviour with every gate open and no failures.
func NewBehaviour() *Behaviour {
	return &Behaviour{
		executions: map[string]int{},
		args:       map[string]map[string]int{},
		gates:      map[string]*gate{},
		held:       map[string][]string{},
		failures:   map[string]*failure{},
	}
}

// StatusError is a method's error that the provider answers with a Dubbo
// response status other than 20 (OK). dubbo-go v3.3.0 itself never does:
// it writes every error, a panic included, as an exception in a status-20
// response (remoting/getty.RpcServerHandler.OnMessage sets Response_OK).
// Apache Dubbo Java answers 70 (SERVICE_ERROR) when a call fails outside
// the method, 80 (SERVER_ERROR) and 100 (thread pool exhausted) when the
// server cannot run it. statusCodec writes it as such.
type StatusError struct {
	Status byte
	Msg    string
}

func (e *StatusError) Error() string { return e.Msg }

// statusCodec is dubbo-go's own codec for the dubbo protocol, except that a
// response whose error is a StatusError goes out with that status; the
// body is then the error text, which dubbo-go already writes for a non-20
// status (impl.marshalResponse).
type statusCodec struct{ remoting.Codec }

func (c statusCodec) EncodeResponse(r *remoting.Response) (*bytes.Buffer, error) {
	if res, ok := r.Result.(protocol.RPCResult); ok {
		var se *StatusError
		if errors.As(res.Err, &se) {
			r.Status = se.Status
		}
	}
	return c.Codec.EncodeResponse(r)
}

// installStatusCodec wraps the registered "dubbo" codec; the server takes
// it when it starts (getty.NewServer), so call it before config.Load.
func installStatusCodec() {
	if c := remoting.GetCodec("dubbo"); c != nil {
		if _, done := c.(statusCodec); !done {
			remoting.RegistryCodec("dubbo", statusCodec{c})
		}
	}
}

// run counts one execution of method with arg, waits while the method is
// gated, then answers: reply's result, or the failure the method's pattern
// says.
func (b *Behaviour) run(method, arg string, reply func() (string, error)) (string, error) {
	b.mu.Lock()
	b.executions[method]++
	if b.args[method] == nil {
		b.args[method] = map[string]int{}
	}
	b.args[method][arg]++
	outcome, status := byte('.'), byte(0)
	if f := b.failures[method]; f != nil {
		outcome, status = f.pattern[f.next%len(f.pattern)], f.status
		f.next++
	}
	var wait chan struct{}
	if g := b.gates[method]; g != nil && (g.max == 0 || g.got < g.max) {
		g.got++
		wait = g.open
		b.held[method] = append(b.held[method], arg)
	}
	b.mu.Unlock()
	if wait != nil {
		<-wait
		b.mu.Lock()
		b.held[method] = remove(b.held[method], arg)
		b.mu.Unlock()
	}
	switch outcome {
	case 'E':
		return "", &StatusError{Status: status, Msg: fmt.Sprintf("breeze-e2e: %s(%s) answered with status %d", method, arg, status)}
	case 'X':
		return "", fmt.Errorf("breeze-e2e: %s(%s) returned an error", method, arg)
	case 'P':
		panic(fmt.Sprintf("breeze-e2e: %s(%s) panicked", method, arg))
	}
	return reply()
}

// remove drops the first s from list.
func remove(list []string, s string) []string {
	for i, v := range list {
		if v == s {
			return append(list[:i], list[i+1:]...)
		}
	}
	return list
}

// Stats is what GET /stats answers.
type Stats struct {
	// Executions counts the calls that reached each method.
	Executions map[string]int `json:"executions"`
	// Args counts them by method and argument.
	Args map[string]map[string]int `json:"args"`
	// Held is the number of calls waiting at a gate now; HeldArgs their
	// arguments, by method.
	Held     int                 `json:"held"`
	HeldArgs map[string][]string `json:"held_args"`
}

func (b *Behaviour) stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := Stats{Executions: map[string]int{}, Args: map[string]map[string]int{}, HeldArgs: map[string][]string{}}
	for m, args := range b.held {
		s.Held += len(args)
		s.HeldArgs[m] = append([]string(nil), args...)
	}
	for m, n := range b.executions {
		s.Executions[m] = n
	}
	for m, a := range b.args {
		s.Args[m] = make(map[string]int, len(a))
		for arg, n := range a {
			s.Args[m][arg] = n
		}
	}
	return s
}

// ServeControl serves the test's control of b on addr (127.0.0.1:PORT):
//
//	GET  /stats                          Stats as JSON
//	POST /gate?method=M[&max=N]          hold M's calls from now on (only the next N)
//	POST /release?method=M               release M's held calls; later ones run at once
//	POST /fail?method=M&pattern=P&status=S  M's executions follow pattern P (see failure), status S for 'E'
//	POST /fail?method=M                  M answers normally again
//
// It returns the address it listens on (addr with the port the kernel
// picked for port 0) once that accepts connections.
func (b *Behaviour) ServeControl(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("control: cannot listen on %s: %w", addr, osReason(err))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(b.stats())
	})
	mux.HandleFunc("POST /gate", func(w http.ResponseWriter, r *http.Request) {
		m := r.URL.Query().Get("method")
		max := 0
		if v := r.URL.Query().Get("max"); v != "" {
			var err error
			if max, err = strconv.Atoi(v); err != nil || max < 0 {
				http.Error(w, "max: a count of calls", http.StatusBadRequest)
				return
			}
		}
		b.mu.Lock()
		if b.gates[m] == nil {
			b.gates[m] = &gate{open: make(chan struct{}), max: max}
		}
		b.mu.Unlock()
	})
	mux.HandleFunc("POST /release", func(w http.ResponseWriter, r *http.Request) {
		m := r.URL.Query().Get("method")
		b.mu.Lock()
		if g := b.gates[m]; g != nil {
			close(g.open)
			delete(b.gates, m)
		}
		b.mu.Unlock()
	})
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		m, pattern := q.Get("method"), q.Get("pattern")
		if strings.Trim(pattern, ".EXP") != "" {
			http.Error(w, "pattern: only '.', 'E', 'X' and 'P'", http.StatusBadRequest)
			return
		}
		status := 0
		if strings.Contains(pattern, "E") {
			var err error
			status, err = strconv.Atoi(q.Get("status"))
			if err != nil || status <= 0 || status > 255 || status == 20 {
				http.Error(w, "status: a Dubbo status byte other than 20", http.StatusBadRequest)
				return
			}
		}
		b.mu.Lock()
		if pattern == "" {
			delete(b.failures, m)
		} else {
			b.failures[m] = &failure{pattern: pattern, status: byte(status)}
		}
		b.mu.Unlock()
	})
	go func() { _ = http.Serve(ln, mux) }()
	return ln.Addr().String(), nil
}
