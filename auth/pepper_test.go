package auth

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestPepperCreateAndReuse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	p1, err := LoadOrCreatePepper(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(p1) != PepperSize {
		t.Fatalf("len = %d", len(p1))
	}
	fi, err := os.Stat(PepperPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("pepper mode %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", di.Mode().Perm())
	}
	p2, err := LoadOrCreatePepper(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p1, p2) {
		t.Errorf("second load returned a different pepper")
	}
	if s := fmt.Sprintf("%v %s %x %#v", p1, p1, p1, p1); bytes.Contains([]byte(s), []byte(fmt.Sprintf("%x", []byte(p1)))) {
		t.Errorf("pepper leaks through fmt: %s", s)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state dir has %d entries, want only the pepper (temp file left behind?)", len(entries))
	}
}

func TestPepperWrongSize(t *testing.T) {
	for _, n := range []int{0, 16, 33} {
		dir := t.TempDir()
		if err := os.WriteFile(PepperPath(dir), make([]byte, n), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreatePepper(dir); err == nil {
			t.Errorf("%d-byte pepper accepted", n)
		}
		if b, _ := os.ReadFile(PepperPath(dir)); len(b) != n {
			t.Errorf("%d-byte pepper was overwritten", n)
		}
	}
}

func TestPepperRace(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	const n = 20
	peppers := make([]Pepper, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			peppers[i], errs[i] = LoadOrCreatePepper(dir)
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		if !bytes.Equal(peppers[i], peppers[0]) {
			t.Fatalf("goroutine %d got a different pepper", i)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("state dir has %d entries after race, want 1", len(entries))
	}
}
