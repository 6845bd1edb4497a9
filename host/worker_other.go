//go:build !linux

package host

import (
	"errors"
	"net"
)

// The worker driver needs epoll: elsewhere every connection gets
// goroutines of its own (startWorkers fails, pickWorker returns nil).
type worker struct{ slices sliceTable }

func startWorkers(*Host, int) ([]*worker, error) {
	return nil, errors.New("host: the event-loop workers need Linux (epoll)")
}

func (*worker) adopt(*endpoint)       { panic("host: no workers") }
func (*worker) schedule(*endpoint)    { panic("host: no workers") }
func (*worker) closeFD(*endpoint)     { panic("host: no workers") }
func (*worker) stop()                 {}
func (*worker) isRunning(uint64) bool { return false }
func takeFD(net.Conn) int             { return -1 }
func closeFD(int)                     {}
func resetOnClose(int)                {}
