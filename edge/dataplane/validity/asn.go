package validity

import "fmt"

// reservedASNs is the IANA special-purpose AS number registry: numbers
// that must not appear in a BGP session between sites.
var reservedASNs = []struct {
	first, last uint32
	why         string
}{
	{0, 0, "reserved (RFC 7607)"},
	{23456, 23456, "AS_TRANS (RFC 6793)"},
	{64496, 64511, "reserved for documentation (RFC 5398)"},
	{65535, 65535, "reserved (RFC 7300)"},
	{65536, 65551, "reserved for documentation (RFC 5398)"},
	{65552, 131071, "reserved (IANA)"},
	{4294967295, 4294967295, "reserved (RFC 7300)"},
}

// ASN checks a BGP AS number. Private ASNs (64512-65534,
// 4200000000-4294967294) are allowed: meshwan's pool uses them.
func ASN(asn uint32) error {
	for _, r := range reservedASNs {
		if asn >= r.first && asn <= r.last {
			return fmt.Errorf("%d is %s", asn, r.why)
		}
	}
	return nil
}

// ASNRange checks that no number of first..last is refused by ASN, so a
// pool the controller allocates from can only hand out ASNs edges accept.
func ASNRange(first, last uint32) error {
	for _, r := range reservedASNs {
		if first <= r.last && r.first <= last {
			return fmt.Errorf("%d-%d includes %d-%d, %s", first, last, r.first, r.last, r.why)
		}
	}
	return nil
}
