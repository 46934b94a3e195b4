//go:build !linux

package relay

import (
	"errors"
	"syscall"
)

// Poller watches parked relay directions. Off Linux nothing parks: add
// always refuses, and a direction keeps its goroutine while it waits.
// The zero value is ready.
type Poller struct{}

// errNoParking is add's refusal off Linux.
var errNoParking = errors.New("relay: parking needs Linux (epoll)")

// add refuses: nothing parks off Linux.
func (p *Poller) add(syscall.RawConn, waker) (uint64, error) { return 0, errNoParking }

// remove has nothing to remove.
func (p *Poller) remove(uint64) bool { return false }

// waker is a parked relay direction, as the poller sees it.
type waker interface {
	wake(id uint64)
}

// Parked reports that nothing is parked: nothing parks off Linux.
func (p *Poller) Parked() (n int, open bool) { return 0, false }
