package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
)

// LineCalls is the calling side of a peer process that reads calls as JSON
// lines on its stdin and answers each with a stdout line `RESULT {...}`
// carrying the call's id, answers in any order: it numbers the calls, keeps
// the ones waiting, and writes one line at a time. Start the process with
// ProcOptions{Stdin: true, OnLine: l.OnLine}, then set Proc.
type LineCalls[R any] struct {
	Proc *Proc

	peer string        // names the process in errors
	id   func(R) int64 // the id a result answers

	mu      sync.Mutex
	nextID  int64
	waiting map[int64]chan R
	writeMu sync.Mutex
}

// NewLineCalls returns a LineCalls for a process named peer in errors
// ("the Java consumer") whose results of type R carry the id that id reads.
func NewLineCalls[R any](peer string, id func(R) int64) *LineCalls[R] {
	return &LineCalls[R]{peer: peer, id: id, waiting: map[int64]chan R{}}
}

// OnLine hands a RESULT line to the call waiting for it and keeps it out of
// the process's output; other lines are kept.
func (l *LineCalls[R]) OnLine(line string) bool {
	rest, ok := strings.CutPrefix(line, "RESULT ")
	if !ok {
		return true
	}
	var r R
	if err := json.Unmarshal([]byte(rest), &r); err != nil {
		return true
	}
	l.mu.Lock()
	ch := l.waiting[l.id(r)]
	delete(l.waiting, l.id(r))
	l.mu.Unlock()
	if ch != nil {
		ch <- r
	}
	return false
}

// Do sends the call that call(id) returns, JSON-encoded on one line, and
// returns its result. It returns when the result arrives, ctx ends or the
// process exits, whichever is first: a test never waits on a call longer
// than its ctx allows.
func (l *LineCalls[R]) Do(ctx context.Context, call func(id int64) any) (R, error) {
	var zero R
	ch := make(chan R, 1)
	l.mu.Lock()
	l.nextID++
	id := l.nextID
	l.waiting[id] = ch
	l.mu.Unlock()
	forget := func() {
		l.mu.Lock()
		delete(l.waiting, id)
		l.mu.Unlock()
	}
	line, err := json.Marshal(call(id))
	if err == nil {
		l.writeMu.Lock()
		err = l.Proc.Write(append(line, '\n'))
		l.writeMu.Unlock()
	}
	if err != nil {
		forget()
		return zero, fmt.Errorf("send to %s: %w", l.peer, err)
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		forget()
		return zero, fmt.Errorf("no answer from %s: %w", l.peer, ctx.Err())
	case <-l.Proc.Done():
		return zero, fmt.Errorf("%s exited", l.peer)
	}
}
