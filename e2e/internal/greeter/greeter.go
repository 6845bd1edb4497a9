// Package greeter describes the test service of the end-to-end suite,
// org.breeze.Greeter, without depending on dubbo-go (see internal/dubbogo
// for the dubbo-go provider and consumer):
//
//	Greet(name string) (string, error)
//	Slow(ms int32) (string, error)   // answers after ms milliseconds
//	Whoami() (string, error)
//
// Every reply is a JSON Reply naming the provider that served the call and
// echoing the call's argument and the attachments the provider received, so
// tests can count providers, match answers to calls and check mutations.
package greeter

import (
	"encoding/json"
	"fmt"
)

// Interface is the Dubbo service path of the test service.
const Interface = "org.breeze.Greeter"

// Reply is what every method of the test service returns, JSON-encoded.
type Reply struct {
	// Provider is the identity given to the provider with -name.
	Provider string `json:"provider"`
	// Version is the Dubbo service version under which the call was served.
	Version string `json:"version"`
	Method  string `json:"method"`
	// Arg echoes the call's argument (Greet's name, Slow's milliseconds).
	Arg string `json:"arg"`
	// Attachments are those the provider received, values as text.
	Attachments map[string]string `json:"attachments"`
}

// ParseReply decodes a reply of the test service.
func ParseReply(s string) (Reply, error) {
	var r Reply
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return Reply{}, fmt.Errorf("greeter reply %q is not JSON: %w", s, err)
	}
	if r.Provider == "" {
		return Reply{}, fmt.Errorf("greeter reply %q names no provider", s)
	}
	return r, nil
}
