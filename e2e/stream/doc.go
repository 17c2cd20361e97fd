// Package stream owns the e2e lab's measurement stream: a paced UDP
// sender whose packets carry a sequence number and their send time, a
// receiver that records every arrival to a file, and the pure analysis of
// those records (the longest hole in the sequence numbers, measured in
// time; one-way latency percentiles; when a condition on the packets
// started to hold for good).
//
// It exists for the failover and SLA steering measurements: all lab
// namespaces share one kernel and so one clock, so the receive time minus
// the send time written by the sender is the one-way latency, and a hole
// in the sequence numbers is an outage of the path.
//
// Definitions (they matter for the figures in docs/benchmarks.md):
//   - a gap is a run of missing sequence numbers between two received
//     packets, Before and After. Its length in send times (Gap.Send) is
//     how long packets were being sent into the hole: the outage. In
//     receive times (Gap.Recv) it also holds the difference between the
//     two packets' one-way latencies (a failover to a slower path reads
//     longer by the difference) and the receiver's scheduling. Sender
//     stalls skip no sequence number and so are never counted as gaps.
//   - percentiles are nearest-rank: the p-th percentile of n values is the
//     ceil(p/100*n)-th smallest, so the p99 of 20 values is the maximum.
//
// Files: wire.go (packet layout), record.go (record file), analyze.go
// (pure), send.go and recv.go (sockets), cli.go (the meshwan-stream
// command line, also run by the e2e test binary itself).
package stream
