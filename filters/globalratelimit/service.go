package globalratelimit

import (
	"sync"
	"sync/atomic"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

// service is the process's one gRPC connection to a rate-limit service
// address, shared by every proxy and config that names the address, and
// kept for the life of the process: a new route table or proxy config
// finds it connected. (Envoy never frees a parsed config either; the
// addresses of a process's configs are few.)
type service struct {
	addr   string
	conn   *grpc.ClientConn
	client rlsv3.RateLimitServiceClient
	// inFlight counts the calls in flight from the whole process.
	inFlight atomic.Int64
}

var services struct {
	mu     sync.Mutex
	byAddr map[string]*service
}

// reconnect bounds gRPC's backoff between connection attempts, whose
// default grows to two minutes: a service back from a restart is used
// again within a second or two, rather than failing checks for minutes.
var reconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
	MinConnectTimeout: 2 * time.Second,
}

// serviceAt returns the connection to addr (host:port, validated), made on
// first use. It connects at once, so that the first requests find it ready
// rather than spending their short deadline on the handshake.
func serviceAt(addr string) (*service, error) {
	services.mu.Lock()
	defer services.mu.Unlock()
	if s := services.byAddr[addr]; s != nil {
		return s, nil
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(reconnect),
		// A name resolving to several replicas: spread the calls.
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
	)
	if err != nil {
		return nil, err
	}
	conn.Connect()
	s := &service{addr: addr, conn: conn, client: rlsv3.NewRateLimitServiceClient(conn)}
	if services.byAddr == nil {
		services.byAddr = map[string]*service{}
	}
	services.byAddr[addr] = s
	return s, nil
}

// acquire takes a call slot unless max calls are in flight.
func (s *service) acquire(max int64) bool {
	if s.inFlight.Add(1) > max {
		s.inFlight.Add(-1)
		return false
	}
	return true
}

func (s *service) release() { s.inFlight.Add(-1) }
