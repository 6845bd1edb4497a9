// Package bench holds Breeze's benchmark tools (see README.md): breeze-load,
// breeze-echo, breeze-relay and breeze-report under cmd/, their code under
// internal/, the configs `make bench` runs (configs/) and recorded results
// (results/). Its tests only check that the tools run; they time nothing.
package bench
