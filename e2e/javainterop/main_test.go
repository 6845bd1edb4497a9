// Package javainterop tests Breeze with real Apache Dubbo Java peers (Dubbo
// 3.3, dubbo protocol, hessian2): a Java consumer and Java providers through
// the proxy, and mixed with the dubbo-go peers of the e2e module.
//
// The Java programs are the Maven project in ../java (JavaProvider,
// JavaConsumer). The first test that needs them runs `mvn -q -B package` once,
// which downloads Dubbo into the local Maven repository (~/.m2) on a fresh
// machine; the build is cached under the user cache directory, keyed by a
// hash of the project's sources. Tests fail when `java` or `mvn` is not
// installed (.ci/run installs them), and when the build fails.
//
// Run from the e2e directory: go test -race ./javainterop
package javainterop

import (
	"testing"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }
