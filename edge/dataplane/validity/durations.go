package validity

import (
	"fmt"
	"time"
)

// Bounds of the IPsec durations. An IKE SA lives minutes to days (under
// 10 minutes the rekeying is churn; beyond a week a key serves too much
// traffic); a CHILD (ESP) SA minutes to a day and never beyond its IKE SA
// (strongSwan would rekey the IKE SA under it anyway); dead-peer detection
// from 5 s (faster is the probe's job) to an hour.
const (
	MinIKELifetime = 10 * time.Minute
	MaxIKELifetime = 7 * 24 * time.Hour
	MinESPLifetime = 5 * time.Minute
	MaxESPLifetime = 24 * time.Hour
	MinDPD         = 5 * time.Second
	MaxDPD         = time.Hour
)

func within(d, lo, hi time.Duration) error {
	if d < lo || d > hi {
		return fmt.Errorf("%v is outside %v..%v", d, lo, hi)
	}
	return nil
}

// IKELifetime checks an IKE SA lifetime.
func IKELifetime(d time.Duration) error { return within(d, MinIKELifetime, MaxIKELifetime) }

// ESPLifetime checks an ESP (CHILD) SA lifetime.
func ESPLifetime(d time.Duration) error { return within(d, MinESPLifetime, MaxESPLifetime) }

// DPD checks a dead-peer-detection interval.
func DPD(d time.Duration) error { return within(d, MinDPD, MaxDPD) }

// ESPWithinIKE checks that the ESP lifetime does not exceed the IKE one.
func ESPWithinIKE(esp, ike time.Duration) error {
	if esp > ike {
		return fmt.Errorf("ESP lifetime %v exceeds the IKE lifetime %v", esp, ike)
	}
	return nil
}
