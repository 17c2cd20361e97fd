package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// IperfResult is one iperf3 TCP run's outcome (iperf3 -J, the "end"
// section).
type IperfResult struct {
	// BitsPerSecond is what the receiver got (sum_received).
	BitsPerSecond float64
	// Bytes the sender sent, and its TCP retransmits.
	Bytes       uint64
	Retransmits uint64
}

// RetransmitsPerMB is Retransmits per 10^6 bytes sent.
func (r IperfResult) RetransmitsPerMB() float64 {
	if r.Bytes == 0 {
		return 0
	}
	return float64(r.Retransmits) / (float64(r.Bytes) / 1e6)
}

// StartIperfServer runs `iperf3 -s` on a site's LAN host until ctx ends.
func (l *Lab) StartIperfServer(ctx context.Context, site string, port int) (*exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.Sites[site].LANNS, "iperf3", "-s", "-p", strconv.Itoa(port))
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go cmd.Wait() // reaped here; ended by ctx
	return cmd, nil
}

// Iperf runs one iperf3 TCP test of d from one site's LAN host to another's
// (its server on port; the first second, slow start, is not counted),
// retrying for up to a minute while the server is
// not listening yet.
func (l *Lab) Iperf(ctx context.Context, from, to string, port int, d time.Duration) (IperfResult, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := Run(ctx, "ip", "netns", "exec", l.Sites[from].LANNS, "iperf3", "-c", l.Sites[to].Host.String(), "-p", strconv.Itoa(port),
			"-t", strconv.Itoa(int(d/time.Second)), "-O", "1", "-J")
		if err == nil {
			return ParseIperf([]byte(out))
		}
		if !strings.Contains(out, "unable to connect") || time.Now().After(deadline) {
			return IperfResult{}, err
		}
		select {
		case <-ctx.Done():
			return IperfResult{}, ctx.Err()
		case <-time.After(time.Second): // the server is starting; poll
		}
	}
}

// ParseIperf reads the summary of iperf3 -J output.
func ParseIperf(js []byte) (IperfResult, error) {
	var v struct {
		End struct {
			SumSent struct {
				Bytes       uint64  `json:"bytes"`
				Retransmits uint64  `json:"retransmits"`
				Bps         float64 `json:"bits_per_second"`
			} `json:"sum_sent"`
			SumReceived struct {
				Bps float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(js, &v); err != nil {
		return IperfResult{}, fmt.Errorf("iperf3 -J: %w", err)
	}
	if v.Error != "" {
		return IperfResult{}, fmt.Errorf("iperf3: %s", v.Error)
	}
	return IperfResult{BitsPerSecond: v.End.SumReceived.Bps, Bytes: v.End.SumSent.Bytes, Retransmits: v.End.SumSent.Retransmits}, nil
}
