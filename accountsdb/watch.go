package accountsdb

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
)

// Intervals of the Watcher.
const (
	// reconcileInterval is how often the watcher compares the database's
	// generation with its snapshot's when no notification came: a
	// notification lost on the way is caught up within it.
	reconcileInterval = 5 * time.Second
	// retryInterval is how long the watcher waits after losing its
	// connection before it connects again.
	retryInterval = 500 * time.Millisecond
)

// Watcher keeps a node's snapshot of the accounts up to date: it LISTENs
// on NotifyChannel, reads the accounts again after each notification,
// after each (re)connect and whenever the generation moved without one,
// and hands them to apply. While PostgreSQL can't be reached it logs one
// ERROR line, keeps the snapshot in force, and connects again every
// retryInterval; once back it reconciles and logs one INFO line.
type Watcher struct {
	db    *DB
	apply func(a *auth.Accounts, generation int64)

	gen atomic.Int64 // generation of the snapshot applied last
	up  atomic.Bool

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Watch starts a Watcher from the snapshot a read at generation g.
// apply gets each newer snapshot with its generation, from one goroutine
// at a time.
func (d *DB) Watch(a *auth.Accounts, g int64, apply func(a *auth.Accounts, generation int64)) *Watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{db: d, apply: apply, cancel: cancel}
	w.gen.Store(g)
	w.up.Store(true)
	w.wg.Add(1)
	go w.run(ctx)
	return w
}

// Up reports whether the watcher's connection to PostgreSQL stands.
func (w *Watcher) Up() bool { return w.up.Load() }

// Generation returns the generation of the snapshot applied last.
func (w *Watcher) Generation() int64 { return w.gen.Load() }

// Close stops the watcher.
func (w *Watcher) Close() {
	w.cancel()
	w.wg.Wait()
}

// run connects, listens and reconciles until ctx ends.
func (w *Watcher) run(ctx context.Context) {
	defer w.wg.Done()
	for ctx.Err() == nil {
		err := w.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		if w.up.CompareAndSwap(true, false) {
			w.db.log.Error("accounts database unavailable: logins go on from the snapshot, changes are refused until it answers", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retryInterval):
		}
	}
}

// listen holds one connection with LISTEN until it fails.
func (w *Watcher) listen(ctx context.Context) error {
	conn, err := w.db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer func() {
		// A connection that listened goes, not back to the pool.
		_ = conn.Conn().Close(context.Background())
		conn.Release()
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
		return err
	}
	if err := w.reconcile(ctx); err != nil {
		return err
	}
	if w.up.CompareAndSwap(false, true) {
		w.db.log.Info("accounts database answers again: snapshot reconciled", "generation", w.gen.Load())
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, reconcileInterval)
		n, err := conn.Conn().WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil:
			if g, perr := strconv.ParseInt(n.Payload, 10, 64); perr == nil && g <= w.gen.Load() {
				continue // this node's snapshot has it already
			}
		case errors.Is(err, context.DeadlineExceeded):
			// no notification within the interval: compare generations
		default:
			return err
		}
		if err := w.reconcile(ctx); err != nil {
			return err
		}
	}
}

// reconcile reads the accounts when the database's generation differs
// from the snapshot's, and applies them.
func (w *Watcher) reconcile(ctx context.Context) error {
	g, err := w.db.Generation(ctx)
	if err != nil {
		return err
	}
	if g == w.gen.Load() {
		return nil
	}
	a, g, err := w.db.LoadGeneration(ctx)
	if err != nil {
		return err
	}
	w.apply(a, g)
	w.gen.Store(g)
	return nil
}
