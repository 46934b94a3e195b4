//go:build unix

package main

import (
	"fmt"
	"time"
)

func (e *benchEnv) fetchPhase() error {
	o := e.o
	rep := e.rep
	user := bulkUser
	hop, err := startSpliceRelay(e.tg.directPlain.addr)
	if err != nil {
		return err
	}
	defer hop.stop()
	hopTarget := target{name: "Dovecot via a splice relay", addr: hop.addr}
	secret := func(t target) string {
		if t.name == "Dovecot direct" || t == hopTarget {
			return e.secrets.password(user)
		}
		return e.secrets.passcode(user, "bench")
	}
	// Warm up: Dovecot indexes the new mail and the page cache fills.
	for _, t := range []target{e.tg.directPlain, e.tg.kanmonPlain} {
		if _, _, err := fetchAll(t, user, secret(t)); err != nil {
			return fmt.Errorf("warm-up FETCH %s: %w", t.name, err)
		}
	}
	type acc struct {
		mibs                 []float64
		bytes                int64
		took                 time.Duration
		cpu, dovecot, client time.Duration
		hopCPU               time.Duration
	}
	runs := []struct {
		mode string
		t    target
	}{
		{"plaintext", e.tg.directPlain}, {"plaintext", e.tg.kanmonPlain},
		{"TLS", e.tg.directTLS}, {"TLS", e.tg.kanmonTLS},
		{"plaintext", hopTarget},
	}
	res := make([]acc, len(runs))
	for round := 0; round < o.fetchRounds; round++ {
		for i, r := range runs {
			k0, _ := procCPU(e.kp.pid())
			h0, _ := procCPU(hop.cmd.Process.Pid)
			d0, c0 := groupCPU(e.dovecotPGID), selfCPU()
			n, took, err := fetchAll(r.t, user, secret(r.t))
			k1, _ := procCPU(e.kp.pid())
			h1, _ := procCPU(hop.cmd.Process.Pid)
			res[i].hopCPU += h1 - h0
			res[i].dovecot += groupCPU(e.dovecotPGID) - d0
			res[i].client += selfCPU() - c0
			if err != nil {
				return fmt.Errorf("FETCH %s %s: %w", r.mode, r.t.name, err)
			}
			res[i].mibs = append(res[i].mibs, float64(n)/(1<<20)/took.Seconds())
			res[i].bytes += n
			res[i].took += took
			res[i].cpu += k1 - k0
		}
	}
	rep.fetch = append(rep.fetch,
		fmt.Sprintf("`FETCH 1:* BODY.PEEK[]` of %d × 1 MiB messages (%.0f MiB of literals; the bytes counted are everything the client received for the FETCH), one client, after one untimed warm-up fetch each way; %d rounds, the four runs interleaved in each round. MiB/s = median over the rounds; kanmon CPU per MiB = its CPU over all its rounds ÷ MiB moved. Plaintext: client↔kanmon and kanmon↔Dovecot both plaintext. TLS: TLS 1.3 between client and kanmon (or Dovecot's IMAPS), kanmon↔Dovecot plaintext.", o.fetchMsgs, float64(o.fetchMsgs), o.fetchRounds),
		"",
		"| mode | Dovecot direct MiB/s | via kanmon MiB/s | **ratio** | target | kanmon CPU ms/MiB | Dovecot CPU ms/MiB direct ; via kanmon | client CPU ms/MiB direct ; via kanmon | rounds (MiB/s) direct ; kanmon |",
		"|---|---|---|---|---|---|---|---|---|")
	for i := 0; i+1 < len(runs); i += 2 {
		d, k := res[i], res[i+1]
		ratio := median(k.mibs) / median(d.mibs)
		target := "—"
		if runs[i].mode == "plaintext" {
			target = "≥ 0.95: met"
			if ratio < 0.95 {
				target = "≥ 0.95: missed"
			}
		}
		perMiB := func(cpu time.Duration, bytes int64) float64 {
			return float64(cpu.Microseconds()) / 1000 / (float64(bytes) / (1 << 20))
		}
		cpuPerMiB := perMiB(k.cpu, k.bytes)
		rep.fetch = append(rep.fetch, fmt.Sprintf("| %s | %.0f | %.0f | **%.2f** | %s | %.2f | %.2f ; %.2f | %.2f ; %.2f | %s ; %s |",
			runs[i].mode, median(d.mibs), median(k.mibs), ratio, target, cpuPerMiB,
			perMiB(d.dovecot, d.bytes), perMiB(k.dovecot, k.bytes), perMiB(d.client, d.bytes), perMiB(k.client, k.bytes),
			fmtList(d.mibs), fmtList(k.mibs)))
		fmt.Printf("fetch %s: direct %.0f MiB/s, kanmon %.0f MiB/s, ratio %.2f, kanmon %.2f ms CPU/MiB\n", runs[i].mode, median(d.mibs), median(k.mibs), ratio, cpuPerMiB)
	}
	h, d := res[len(runs)-1], res[0]
	hopMiB := float64(h.bytes) / (1 << 20)
	rep.fetch = append(rep.fetch, "",
		fmt.Sprintf("Reference hop (plaintext, the same rounds): a relay process that only splices (Go io.Copy between the two TCP connections): %.0f MiB/s, **%.2f** × direct, %.2f ms CPU/MiB in the relay, %.2f ms/MiB in Dovecot; rounds %s.",
			median(h.mibs), median(h.mibs)/median(d.mibs), float64(h.hopCPU.Microseconds())/1000/hopMiB,
			float64(h.dovecot.Microseconds())/1000/hopMiB, fmtList(h.mibs)))
	fmt.Printf("fetch plaintext through the reference splice relay: %.0f MiB/s, ratio %.2f, relay %.2f ms CPU/MiB\n",
		median(h.mibs), median(h.mibs)/median(d.mibs), float64(h.hopCPU.Microseconds())/1000/hopMiB)
	return nil
}

func fmtList(xs []float64) string {
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%.0f", x)
	}
	return s
}
