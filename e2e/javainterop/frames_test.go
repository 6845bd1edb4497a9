package javainterop

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// envWriteJavaFrames=DIR makes the tests write real Apache Dubbo Java frames
// they saw to DIR (for the Dubbo codec's corpus, codecs/dubbo/testdata/java).
const envWriteJavaFrames = "E2E_WRITE_JAVA_FRAMES"

// javaFrames picks frames of Dubbo Java from what a tee between the Java
// consumer and the proxy saw. Requests are the Java client's bytes; the
// responses are the Java providers' bytes (the proxy only rewrites the id,
// back to the Java client's own).
func javaFrames(t *testing.T, st harness.TeeState) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	responseTo := func(f harness.TeeFrame) []byte {
		for _, g := range st.Frames {
			if g.Conn == f.Conn && g.Dir != f.Dir && !g.Header.IsRequest() && g.Header.ID == f.Header.ID {
				return g.Raw
			}
		}
		return nil
	}
	set := func(name string, raw []byte) {
		if _, ok := files[name]; !ok && raw != nil {
			files[name] = raw
		}
	}
	for _, f := range st.Frames {
		if f.Dir != harness.Up || !f.Header.IsRequest() {
			continue
		}
		if f.Header.IsEvent() {
			set("heartbeat_request.bin", f.Raw)
			continue
		}
		body := f.Raw[harness.HeaderLen:]
		generic := bytes.Contains(body, []byte("$invoke"))
		has := func(s string) bool { return bytes.Contains(body, []byte(s)) }
		resp := responseTo(f)
		switch {
		case has("Mirror") && generic:
			set("request_generic_mirror.bin", f.Raw)
			set("response_generic_mirror.bin", resp)
		case has("Mirror"):
			set("request_mirror.bin", f.Raw)
			set("response_mirror.bin", resp)
		case has("Greet") && has("tenant") && generic:
			set("request_generic_greet_attachments.bin", f.Raw)
		case has("Greet") && has("tenant"):
			set("request_greet_attachments.bin", f.Raw)
			set("response_greet.bin", resp)
		case has("Hidden"):
			set("request_generic_unrouted.bin", f.Raw)
		}
	}
	return files
}

// writeJavaFrames writes files to $E2E_WRITE_JAVA_FRAMES, if set.
func writeJavaFrames(t *testing.T, files map[string][]byte) {
	t.Helper()
	dir := os.Getenv(envWriteJavaFrames)
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(files))
	for name, raw := range files {
		if err := os.WriteFile(filepath.Join(dir, name), raw, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	t.Logf("wrote %d Dubbo Java frames to %s: %v", len(names), dir, names)
}
