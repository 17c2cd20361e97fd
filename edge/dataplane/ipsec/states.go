package ipsec

// IKEState is an IKE_SA state as charon reports it in list-sas (libcharon
// ike_sa.h ike_sa_state_names). The string is charon's own: it is read
// off the VICI answer as is and may be shown to operators.
type IKEState string

// The IKE_SA states, from least to most useful (see rank).
const (
	IKENone        IKEState = "" // no IKE_SA
	IKEDestroying  IKEState = "DESTROYING"
	IKEDeleting    IKEState = "DELETING"
	IKEPassive     IKEState = "PASSIVE"
	IKECreated     IKEState = "CREATED"
	IKEConnecting  IKEState = "CONNECTING"
	IKERekeyed     IKEState = "REKEYED"
	IKERekeying    IKEState = "REKEYING"
	IKEEstablished IKEState = "ESTABLISHED"
)

// ChildState is a CHILD_SA state as charon reports it in list-sas
// (libcharon child_sa.h child_sa_state_names).
type ChildState string

// The CHILD_SA states, from least to most useful (see rank).
const (
	ChildNone       ChildState = "" // no CHILD_SA
	ChildDestroying ChildState = "DESTROYING"
	ChildDeleted    ChildState = "DELETED"
	ChildDeleting   ChildState = "DELETING"
	ChildRouted     ChildState = "ROUTED"
	ChildRetrying   ChildState = "RETRYING"
	ChildCreated    ChildState = "CREATED"
	ChildInstalling ChildState = "INSTALLING"
	ChildUpdating   ChildState = "UPDATING"
	ChildRekeyed    ChildState = "REKEYED"
	ChildRekeying   ChildState = "REKEYING"
	ChildInstalled  ChildState = "INSTALLED"
)

// ikeOrder and childOrder rank the states for Status's "best state"
// (index: higher is better; a state charon may add later ranks 0, with
// none).
var (
	ikeOrder = []IKEState{IKENone, IKEDestroying, IKEDeleting, IKEPassive, IKECreated, IKEConnecting,
		IKERekeyed, IKERekeying, IKEEstablished}
	childOrder = []ChildState{ChildNone, ChildDestroying, ChildDeleted, ChildDeleting, ChildRouted,
		ChildRetrying, ChildCreated, ChildInstalling, ChildUpdating, ChildRekeyed, ChildRekeying, ChildInstalled}
)

func rank[S comparable](order []S, s S) int {
	for i, o := range order {
		if o == s {
			return i
		}
	}
	return 0
}

// Pending reports whether an IKE_SA in this state is being set up: a
// second initiation would create a duplicate.
func (s IKEState) Pending() bool {
	return s == IKECreated || s == IKEConnecting || s == IKEPassive
}

// Up reports whether an IKE_SA in this state is established (possibly
// mid-rekey) and can carry CHILD_SAs.
func (s IKEState) Up() bool {
	return s == IKEEstablished || s == IKERekeying || s == IKERekeyed
}

// Usable reports whether a CHILD_SA in this state carries traffic or is
// about to (installing, rekeying, retrying): initiating another would
// create a duplicate.
func (s ChildState) Usable() bool {
	switch s {
	case ChildCreated, ChildInstalling, ChildInstalled, ChildUpdating, ChildRekeying, ChildRekeyed, ChildRetrying:
		return true
	}
	return false
}
