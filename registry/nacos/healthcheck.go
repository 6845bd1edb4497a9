package nacos

import (
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/common/remote/rpc/rpc_response"
)

// A Nacos 2 client sends the server a HealthCheckRequest whenever it sent
// nothing for 5 s (the SDK's KEEP_ALIVE_TIME), and after a failed request.
// nacos-sdk-go (2.2.2 here, 2.3.2 the same) reads the answer's outcome
// from its "success" field only; Nacos (Java) writes that field, but
// rnacos 0.8.8 does not (its BaseResponse is resultCode, errorCode,
// message, requestId). Against rnacos every such check "fails": the
// client opens a new connection and closes the old one, and the server
// drops every ephemeral instance and subscription of the old connection
// until the SDK has registered and subscribed again. At 1,000 interfaces
// × 10 providers that is 1,000 instances per idle client, gone and back
// every 10 to 15 s, and the set Breeze serves never settles (see the
// README and bench/results/2026-11-30-registry-scale.md).
//
// The SDK decodes each answer through rpc_response.ClientResponseMapping,
// filled by its init (which runs before this one): the health check's
// entry is replaced by a response that is a success as Nacos' own Java
// Response.isSuccess() defines it, resultCode 200, or when it says
// success. Against Nacos nothing changes (it sends both); the mapping is
// process-wide, so every SDK client of the process (a provider's too, in
// tests) gets it.
func init() {
	rpc_response.ClientResponseMapping[(&rpc_response.HealthCheckResponse{}).GetResponseType()] = func() rpc_response.IResponse {
		return &healthCheckResponse{rpc_response.HealthCheckResponse{Response: &rpc_response.Response{}}}
	}
}

// healthCheckResponse is the SDK's HealthCheckResponse with the outcome
// read from resultCode too.
type healthCheckResponse struct {
	rpc_response.HealthCheckResponse
}

// IsSuccess: resultCode 200, or "success" (the SDK reads only the latter).
func (r *healthCheckResponse) IsSuccess() bool {
	return r.Success || r.ResultCode == constant.RESPONSE_CODE_SUCCESS
}
