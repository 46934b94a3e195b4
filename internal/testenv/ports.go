//go:build unix

package testenv

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// FreePorts returns n distinct loopback ports that were free a moment ago:
// it binds port 0 n times at once, then closes them all. The server may
// still lose a port to another process before it binds it; RetryBind is for
// that.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// ErrAddrInUse marks a Launch that failed because a chosen port was taken;
// RetryBind tries again after it.
var ErrAddrInUse = errors.New("a listener port was already in use")

// BindAttempts is how often, at most, RetryBind starts a server.
const BindAttempts = 5

// markAddrInUse returns err, marked as ErrAddrInUse when the server's log
// says "Address already in use".
func markAddrInUse(err error, log string) error {
	if strings.Contains(log, "Address already in use") {
		return fmt.Errorf("%w: %v", ErrAddrInUse, err)
	}
	return err
}

// RetryBind calls start, which picks ports and starts a server, until it
// succeeds, fails other than with ErrAddrInUse, or has run BindAttempts
// times. It returns start's last error.
func RetryBind(start func() error) error {
	for attempt := 1; ; attempt++ {
		err := start()
		if err == nil || !errors.Is(err, ErrAddrInUse) || attempt >= BindAttempts {
			return err
		}
	}
}

// RetryPorts calls start with n ports from FreePorts, under RetryBind: again
// with new ports when start failed because one was taken in the meantime.
// It returns the last error.
func RetryPorts(n int, start func(ports []int) error) error {
	return RetryBind(func() error {
		ports, err := FreePorts(n)
		if err != nil {
			return err
		}
		return start(ports)
	})
}
