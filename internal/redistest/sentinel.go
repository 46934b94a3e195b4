//go:build unix

package redistest

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/testenv"
)

const (
	// DefaultMasterName is the master name the sentinels monitor unless
	// SentinelOptions.Master says otherwise.
	DefaultMasterName = "kanmon"
	// sentinelReadyTimeout bounds how long StartSentinel waits for the
	// replica to sync and the sentinels to find it and each other.
	sentinelReadyTimeout = 30 * time.Second
	// failoverTimeout bounds how long KillMaster waits for the sentinels
	// to agree on a promoted replica. A failover normally takes a few
	// seconds; a split vote among the sentinels costs another
	// 2 × failover-timeout (10 s) before the next election.
	failoverTimeout = 30 * time.Second
)

// SentinelOptions configures StartSentinel. The zero value monitors a master
// named "kanmon" without passwords.
type SentinelOptions struct {
	// Master is the name the sentinels monitor the master under
	// (sentinel monitor NAME ...). Letters, digits and ".-_". Default
	// "kanmon".
	Master string
	// Password becomes requirepass and masterauth of the master and the
	// replica, and the sentinels' auth-pass. The sentinels themselves have
	// no password.
	Password string
}

// SentinelSet is a running Redis Sentinel setup on loopback: one master, one
// replica of it, and three sentinels that monitor it with quorum 2,
// down-after-milliseconds 1000 and failover-timeout 5000, so that a failover
// completes in a few seconds.
type SentinelSet struct {
	name      string
	password  string
	sentinels []*Server

	mu   sync.Mutex
	data map[string]*Server // the master and the replica, by address
}

// masterNameRE is what SentinelOptions.Master may be.
var masterNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// StartSentinel starts a master, its replica and three sentinels, each a
// redis-server with its own configuration file in a temporary directory and
// a free loopback port, and kills them all when the test ends. It returns
// once the replica is in sync and every sentinel sees the master, the replica
// and the two other sentinels; it fails the test (with the logs) when that
// takes more than 30 seconds.
func StartSentinel(t testing.TB, opts SentinelOptions) *SentinelSet {
	t.Helper()
	bin, ok := redisServer.Require(t)
	if !ok {
		return nil
	}
	if opts.Master == "" {
		opts.Master = DefaultMasterName
	}
	if !masterNameRE.MatchString(opts.Master) {
		t.Fatalf("redistest: master name %q: letters, digits and %q only", opts.Master, "._-")
	}
	if err := validate(Options{Password: opts.Password}); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	dir := t.TempDir()
	set := &SentinelSet{name: opts.Master, password: opts.Password, data: map[string]*Server{}}

	// Both data nodes may become a replica (the master after a failover
	// and a restart), so both know the password to replicate with. The
	// master streams its snapshot at once instead of waiting 5 s (Redis
	// 7's default) for more replicas.
	repl := dataConfig(Options{Password: opts.Password})
	if opts.Password != "" {
		repl = append(repl, "masterauth "+quote(opts.Password))
	}
	repl = append(repl, "repl-diskless-sync-delay 0")
	master := newServer(t, bin, dir, "master", opts.Password, repl)
	master.firstStart(t)
	replica := newServer(t, bin, dir, "replica", opts.Password,
		append(repl[:len(repl):len(repl)], "replicaof 127.0.0.1 "+strconv.Itoa(master.port)))
	replica.firstStart(t)
	set.data[master.Addr()] = master
	set.data[replica.Addr()] = replica
	// A sentinel learns of replicas from the master's INFO, which it asks
	// at once on connecting and then only every 10 s: the replica must be
	// connected before the sentinels start.
	testenv.WaitFor(t, sentinelReadyTimeout, "replica "+replica.Addr()+" in sync with master "+master.Addr(), func() error {
		return replicationUp(master, replica)
	})

	for i := 1; i <= 3; i++ {
		s := newServer(t, bin, dir, fmt.Sprintf("sentinel-%d", i), "", set.sentinelConfig(master.port))
		s.sentinel = true
		s.firstStart(t)
		set.sentinels = append(set.sentinels, s)
	}
	testenv.WaitFor(t, sentinelReadyTimeout, "sentinels to see the master, the replica and each other", func() error {
		for _, s := range set.sentinels {
			if err := set.sentinelReady(s, master.Addr(), replica.Addr()); err != nil {
				return err
			}
		}
		return nil
	})
	return set
}

// sentinelConfig returns the configuration lines of a sentinel monitoring the
// master on masterPort. Sentinel rewrites its file (its own id, the replicas
// and sentinels it finds, failovers), so each sentinel has its own.
func (set *SentinelSet) sentinelConfig(masterPort int) []string {
	n := set.name
	c := []string{
		"sentinel resolve-hostnames no",
		"sentinel announce-hostnames no",
		"sentinel announce-ip 127.0.0.1",
		fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2", n, masterPort),
		"sentinel down-after-milliseconds " + n + " 1000",
		"sentinel failover-timeout " + n + " 5000",
		"sentinel parallel-syncs " + n + " 1",
	}
	if set.password != "" {
		c = append(c, "sentinel auth-pass "+n+" "+quote(set.password))
	}
	return c
}

// replicationUp checks that master counts one connected replica and that
// replica's link to master is up.
func replicationUp(master, replica *Server) error {
	info, err := master.do("INFO", "replication")
	if err != nil {
		return fmt.Errorf("INFO of master %s: %v", master.Addr(), err)
	}
	if n := infoField(info, "connected_slaves"); n != "1" {
		return fmt.Errorf("master %s: connected_slaves:%s", master.Addr(), n)
	}
	info, err = replica.do("INFO", "replication")
	if err != nil {
		return fmt.Errorf("INFO of replica %s: %v", replica.Addr(), err)
	}
	if st := infoField(info, "master_link_status"); st != "up" {
		return fmt.Errorf("replica %s: master_link_status:%s", replica.Addr(), st)
	}
	return nil
}

// sentinelReady checks that sentinel s monitors masterAddr as a healthy
// master, with replicaAddr as its replica whose link is up, and knows the
// two other sentinels (needed for the quorum and the leader election).
func (set *SentinelSet) sentinelReady(s *Server, masterAddr, replicaAddr string) error {
	r, err := s.do("SENTINEL", "MASTER", set.name)
	if err != nil {
		return fmt.Errorf("%s: SENTINEL MASTER: %v", s.describe(), err)
	}
	m := fields(r)
	if addr := net.JoinHostPort(m["ip"], m["port"]); addr != masterAddr || m["flags"] != "master" ||
		m["num-slaves"] != "1" || m["num-other-sentinels"] != "2" {
		return fmt.Errorf("%s sees master %s flags %q, %s replicas, %s other sentinels",
			s.describe(), addr, m["flags"], m["num-slaves"], m["num-other-sentinels"])
	}
	r, err = s.do("SENTINEL", "REPLICAS", set.name)
	if err != nil {
		return fmt.Errorf("%s: SENTINEL REPLICAS: %v", s.describe(), err)
	}
	reps, _ := r.([]any)
	for _, rep := range reps {
		f := fields(rep)
		if net.JoinHostPort(f["ip"], f["port"]) == replicaAddr && f["flags"] == "slave" && f["master-link-status"] == "ok" {
			return nil
		}
	}
	return fmt.Errorf("%s does not see replica %s with its link up: %v", s.describe(), replicaAddr, r)
}

// SentinelAddrs returns the sentinels' "127.0.0.1:port" addresses, for
// redis.FailoverOptions.SentinelAddrs.
func (set *SentinelSet) SentinelAddrs() []string {
	a := make([]string, len(set.sentinels))
	for i, s := range set.sentinels {
		a[i] = s.Addr()
	}
	return a
}

// MasterName returns the name the sentinels monitor the master under.
func (set *SentinelSet) MasterName() string { return set.name }

// MasterAddr asks the sentinels (SENTINEL get-master-addr-by-name) for the
// current master and returns its "127.0.0.1:port", from the first sentinel
// that answers. It fails the test when none does.
func (set *SentinelSet) MasterAddr(t testing.TB) string {
	t.Helper()
	var errs []error
	for _, s := range set.sentinels {
		addr, err := set.masterAddrFrom(s)
		if err == nil {
			return addr
		}
		errs = append(errs, err)
	}
	t.Fatalf("redistest: no sentinel names the master: %v", errors.Join(errs...))
	return ""
}

// masterAddrFrom asks sentinel s for the master's address.
func (set *SentinelSet) masterAddrFrom(s *Server) (string, error) {
	r, err := s.do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", set.name)
	if err != nil {
		return "", fmt.Errorf("%s: %v", s.describe(), err)
	}
	a, _ := r.([]any)
	if len(a) != 2 {
		return "", fmt.Errorf("%s: get-master-addr-by-name answered %v", s.describe(), r)
	}
	host, _ := a[0].(string)
	port, _ := a[1].(string)
	return net.JoinHostPort(host, port), nil
}

// KillMaster kills the current master (SIGKILL, whichever server that is
// now) and waits until all three sentinels name another master and that
// server answers ROLE as a master, and returns its address. It fails the test
// when that takes more than 30 seconds. The killed server stays down.
func (set *SentinelSet) KillMaster(t testing.TB) (newMaster string) {
	t.Helper()
	old := set.MasterAddr(t)
	set.mu.Lock()
	srv := set.data[old]
	set.mu.Unlock()
	if srv == nil {
		t.Fatalf("redistest: the sentinels name %s as the master, which is none of this set's servers", old)
	}
	srv.Kill()
	testenv.WaitFor(t, failoverTimeout, "the sentinels to promote a new master after killing "+old, func() error {
		var addr string
		for _, s := range set.sentinels {
			a, err := set.masterAddrFrom(s)
			if err != nil {
				return err
			}
			if a == old {
				return fmt.Errorf("%s still names %s", s.describe(), old)
			}
			if addr != "" && a != addr {
				return fmt.Errorf("the sentinels disagree: %s and %s", addr, a)
			}
			addr = a
		}
		set.mu.Lock()
		srv := set.data[addr]
		set.mu.Unlock()
		if srv == nil {
			return fmt.Errorf("the sentinels name %s, which is none of this set's servers", addr)
		}
		r, err := srv.do("ROLE")
		if err != nil {
			return fmt.Errorf("ROLE of %s: %v", addr, err)
		}
		if a, _ := r.([]any); len(a) == 0 || a[0] != "master" {
			return fmt.Errorf("%s answers ROLE with %v", addr, r)
		}
		newMaster = addr
		return nil
	})
	return newMaster
}
