//go:build unix

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
)

// The reference hop: the least a relay can do between the client and
// Dovecot, so that FETCH through kanmon can be compared with the cost of
// the extra loopback hop itself. It runs as a process of its own
// (kanmon-bench -splice-relay-to ADDR), so that /proc gives its CPU, and
// relays each connection with io.Copy between the two TCP connections,
// which Go's runtime does with splice(2) on Linux: no user-space copy,
// no protocol, no TLS.

// runSpliceRelay listens on a free loopback port, prints the address on
// stdout, and relays every connection to target until killed.
func runSpliceRelay(target string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "splice relay:", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			b, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer b.Close()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(b, c)
				_ = b.(*net.TCPConn).CloseWrite()
			}()
			_, _ = io.Copy(c, b)
			_ = c.(*net.TCPConn).CloseWrite()
			wg.Wait()
		}()
	}
}

// spliceRelay is a running reference hop.
type spliceRelay struct {
	cmd  *exec.Cmd
	addr string
}

// startSpliceRelay starts the reference hop to target as a child process.
func startSpliceRelay(target string) (*spliceRelay, error) {
	cmd := exec.Command(os.Args[0], "-splice-relay-to", target)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("splice relay: %w", err)
	}
	return &spliceRelay{cmd: cmd, addr: strings.TrimSpace(addr)}, nil
}

// stop kills the hop.
func (r *spliceRelay) stop() {
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}
