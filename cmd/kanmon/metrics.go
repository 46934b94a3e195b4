package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/kanmon-mail/kanmon/metrics"
)

// metricsReadHeaderTimeout bounds how long a scraper may take to send its
// request headers.
const metricsReadHeaderTimeout = 10 * time.Second

// serveMetrics opens the metrics listener (config metrics_address) and
// serves m's /metrics there over plain HTTP until stop is called.
func serveMetrics(addr string, m *metrics.Metrics, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics_address: %w", err)
	}
	hs := &http.Server{
		Handler:           m.Handler(),
		ReadHeaderTimeout: metricsReadHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener failed", "address", addr, "err", err)
		}
	}()
	log.Info("metrics listening", "address", ln.Addr().String(), "path", "/metrics")
	return func() {
		_ = hs.Close()
		<-done
	}, nil
}
