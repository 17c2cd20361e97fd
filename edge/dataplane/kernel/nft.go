package kernel

import (
	"fmt"

	"github.com/google/nftables"
)

// NFT lists exactly the nftables calls meshwan makes (the firewall's
// table inet meshwan and steering's inet meshwan_steer): dumps of one
// family's tables, chains, rules, sets and set elements, and a batch of
// writes that Flush commits as one kernel transaction (all or nothing).
// *nftables.Conn implements it (NewNFT); FakeNFT models it in memory.
//
// Pitfall: google/nftables' Conn keeps queued messages and a sticky
// serialization error until Flush, so every Apply and Cleanup opens a
// fresh NFT (managers take a dial function, never a shared NFT).
type NFT interface {
	ListTablesOfFamily(family nftables.TableFamily) ([]*nftables.Table, error)
	ListChainsOfTableFamily(family nftables.TableFamily) ([]*nftables.Chain, error)
	GetRules(t *nftables.Table, c *nftables.Chain) ([]*nftables.Rule, error)
	GetSets(t *nftables.Table) ([]*nftables.Set, error)
	GetSetElements(s *nftables.Set) ([]nftables.SetElement, error)

	AddTable(t *nftables.Table) *nftables.Table
	DelTable(t *nftables.Table)
	AddChain(c *nftables.Chain) *nftables.Chain
	FlushChain(c *nftables.Chain)
	DelChain(c *nftables.Chain)
	// AddSet queues a set with its first elements; an anonymous set
	// lives and dies with the rule whose lookup binds it (by SetID in
	// the same batch).
	AddSet(s *nftables.Set, vals []nftables.SetElement) error
	FlushSet(s *nftables.Set)
	SetAddElements(s *nftables.Set, vals []nftables.SetElement) error
	DelSet(s *nftables.Set)
	// AddRule appends (or, with Position, adds after that handle);
	// InsertRule prepends (or inserts before Position).
	AddRule(r *nftables.Rule) *nftables.Rule
	InsertRule(r *nftables.Rule) *nftables.Rule
	DelRule(r *nftables.Rule) error
	// Flush sends the queued writes as one transaction.
	Flush() error
}

var _ NFT = (*nftables.Conn)(nil)

// NewNFT opens an nftables connection acting in the network namespace
// open as file descriptor nsFD, or in the caller's namespace if nsFD < 0.
// Nothing switches the calling thread's namespace.
func NewNFT(nsFD int) (NFT, error) {
	var opts []nftables.ConnOption
	if nsFD >= 0 {
		opts = append(opts, nftables.WithNetNSFd(nsFD))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables connection: %w", err)
	}
	return c, nil
}
