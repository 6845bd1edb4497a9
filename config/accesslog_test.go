package config

import (
	"strings"
	"testing"
)

// An access log's mistakes are reported by Validate under their full
// path, as the runner file names them.
func TestAccessLogValidation(t *testing.T) {
	good := goldenRunner + `    access_log:
    - path: /dev/stdout
    - path: /var/log/breeze/access.json
      log_format:
        json_format: {start_time: "%START_TIME%", method: "%METHOD%", tenant: "%REQUEST_PROPERTY(tenant):64%"}
      filter: {errors_only: true, min_duration: 100ms, response_flag_filter: {flags: [UT, UO]}, sample_percentage: 10}
`
	if _, err := ParseRunner("breeze.yaml", []byte(good)); err != nil {
		t.Fatalf("a valid access_log: %v", err)
	}
	bad := goldenRunner + `    access_log:
    - path: access.log
      log_format: {text_format: "[%START_TIME%] %METADATA(tenant)% %DURATON%"}
      filter: {response_flag_filter: {flags: [TIMEOUT]}, sample_percentage: 150}
`
	_, err := ParseRunner("breeze.yaml", []byte(bad))
	for _, want := range []string{
		`breeze.yaml: listeners[0].proxy.access_log[0].path: "access.log": must be absolute: the working directory of Envoy is nothing to rely on`,
		`breeze.yaml: listeners[0].proxy.access_log[0].log_format.text_format: "[%START_TIME%] %METADATA(tenant)% %DURATON%": at offset 15: %METADATA%: Envoy's %METADATA% reads dynamic metadata, which Breeze has none of: a request's key is %REQUEST_PROPERTY(key)%`,
		`breeze.yaml: listeners[0].proxy.access_log[0].filter.response_flag_filter.flags[0]: "TIMEOUT": not a response flag: want one of NR, UH, UF, UO, URX, UT, UC, DC, DI, FI, RL, UAEX, IE`,
		`breeze.yaml: listeners[0].proxy.access_log[0].filter.sample_percentage: 150: must be 0–100`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}
