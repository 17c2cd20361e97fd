// Command meshwan-stream sends and receives the e2e lab's measurement
// stream: sequence-numbered, timestamped UDP packets at a steady rate
// (send), recorded on arrival (recv), and summarised (report). Run it in
// lab namespaces with `ip netns exec`; see package e2e/stream.
package main

import (
	"os"

	"github.com/meshwan/meshwan/e2e/stream"
)

func main() { os.Exit(stream.Main(os.Args[1:], os.Stdout, os.Stderr)) }
