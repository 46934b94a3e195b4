package auth

import (
	"path/filepath"
	"testing"
	"time"
)

func TestLastUseStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", LastUseDBName)
	if got, err := ReadLastUse(path); err != nil || len(got) != 0 {
		t.Fatalf("a missing database: %v %v", got, err)
	}
	s, err := OpenLastUse(path, time.Hour) // no timed flush during the test
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	s.Record("id-a", LastUse{User: "alice", App: "Thunderbird", Time: at, ClientIP: "192.0.2.1", Protocol: "imap", Client: "Thunderbird 128"})
	s.Record("id-b", LastUse{User: "alice", App: "Cybozu", Time: at, ClientIP: "192.0.2.2", Protocol: "pop3"})
	s.Record("id-a", LastUse{User: "alice", App: "Thunderbird", Time: at.Add(time.Minute), ClientIP: "192.0.2.3", Protocol: "imap"})
	s.Record("", LastUse{User: "ignored"})
	all, err := s.All() // pending ones included
	if err != nil || len(all) != 2 || all["id-a"].ClientIP != "192.0.2.3" {
		t.Fatalf("All: %+v %v", all, err)
	}
	if _, err := ReadLastUse(path); err == nil {
		t.Error("read the database while the store holds it")
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.Retain(map[string]bool{"id-a": true}); err != nil {
		t.Fatal(err)
	}
	s.Record("id-c", LastUse{User: "bob"})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.Record("id-d", LastUse{User: "after close"}) // ignored, no panic

	got, err := ReadLastUse(path)
	if err != nil {
		t.Fatal(err)
	}
	want := LastUse{User: "alice", App: "Thunderbird", Time: at.Add(time.Minute), ClientIP: "192.0.2.3", Protocol: "imap"}
	if len(got) != 2 || got["id-a"] != want || got["id-c"].User != "bob" {
		t.Fatalf("read back: %+v", got)
	}
}

func TestLastUseTimedFlush(t *testing.T) {
	path := filepath.Join(t.TempDir(), LastUseDBName)
	s, err := OpenLastUse(path, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Record("id", LastUse{User: "alice"})
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := readLastUse(s.db)
		if err != nil {
			t.Fatal(err)
		}
		if got["id"].User == "alice" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the record was never written")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
