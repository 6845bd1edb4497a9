// Package inenvoy measures Breeze's Go side as it runs inside Envoy, with
// no Envoy and no sockets: testdata/harness.c loads breeze.so (plugin/, the shipped
// plugin plus an allocation counter) the way Envoy does and drives its
// exported entry points from memory with the bench's request mix; see
// testdata/harness.c and inenvoy_test.go. What it leaves out (Envoy's C++ half of
// the Go filter, the sockets, the event loop) is in bench/README.md.
package inenvoy
