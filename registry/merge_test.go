package registry

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// scripted is a Registry publishing the updates it is given, then waiting
// for ctx (or returning err).
type scripted struct {
	name    string
	updates chan Update
	err     error
}

func (s *scripted) Name() string { return s.name }
func (s *scripted) Run(ctx context.Context, publish func(Update)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-s.updates:
			if !ok {
				return s.err
			}
			publish(u)
		}
	}
}

func inst(iface string, port uint32) Instance {
	return Instance{Interface: iface, Address: "10.0.0.1", Port: port, Protocol: ProtocolDubbo}
}

func describe(u Update) string {
	s := fmt.Sprintf("stale=%v", u.Stale)
	for _, in := range u.Instances {
		s += fmt.Sprintf(" %s:%d", in.Interface, in.Port)
	}
	return s
}

func TestMergePublishesOnceAllRead(t *testing.T) {
	zk := &scripted{name: "zookeeper a", updates: make(chan Update)}
	nacos := &scripted{name: "nacos b", updates: make(chan Update)}
	m := Merge(zk, nacos)
	if got := m.Name(); got != "zookeeper a + nacos b" {
		t.Errorf("Name() = %q", got)
	}
	got := make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, func(u Update) { got <- describe(u) }) }()

	zk.updates <- Update{Instances: []Instance{inst("A", 1)}}
	nacos.updates <- Update{Instances: []Instance{inst("A", 2)}}
	// The first publish waits for both; zk's alone was not published.
	if s := <-got; s != "stale=false A:1 A:2" {
		t.Errorf("first publish: %s, want both registries' instances", s)
	}
	nacos.updates <- Update{Instances: []Instance{inst("A", 2)}, Stale: true}
	if s := <-got; s != "stale=true A:1 A:2" {
		t.Errorf("one registry stale: published %s, want stale=true with both sets", s)
	}
	zk.updates <- Update{}
	if s := <-got; s != "stale=true A:2" {
		t.Errorf("after zk emptied: %s", s)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
}

// A registry that gives up stops the merged Run with its error.
func TestMergeStopsOnFirstError(t *testing.T) {
	broken := &scripted{name: "a", updates: make(chan Update), err: errors.New("no servers")}
	ok := &scripted{name: "b", updates: make(chan Update)}
	close(broken.updates)
	err := Merge(broken, ok).Run(context.Background(), func(Update) {})
	if err == nil || err.Error() != "no servers" {
		t.Errorf("Run = %v, want the broken registry's error", err)
	}
}

func TestMergeOfOneIsItself(t *testing.T) {
	r := &scripted{name: "only"}
	if Merge(r) != Registry(r) {
		t.Error("Merge of one registry wrapped it")
	}
}
