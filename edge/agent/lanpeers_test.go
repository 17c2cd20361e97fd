package agent

import (
	"testing"
)

func TestParseLANPeers(t *testing.T) {
	ps, err := ParseLANPeers(" 10.1.1.2:64512, 10.1.1.3:65001 ,")
	if err != nil || len(ps) != 2 || ps[0].Addr.String() != "10.1.1.2" || ps[0].ASN != 64512 || !ps[0].LAN || ps[1].ASN != 65001 {
		t.Fatalf("ParseLANPeers = %+v, %v", ps, err)
	}
	for _, bad := range []string{"10.1.1.2", "10.1.1.2:x", "fd00::1:64512", "10.1.1.2:0", "host:64512"} {
		if _, err := ParseLANPeers(bad); err == nil {
			t.Errorf("ParseLANPeers(%q) accepted", bad)
		}
	}
	if ps, err := ParseLANPeers(""); err != nil || ps != nil {
		t.Errorf("empty flag: %v %v", ps, err)
	}
}
