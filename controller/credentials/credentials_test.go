package credentials

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/etcdtest"
)

func TestParseRole(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Role
		ok   bool
	}{
		{"read_only", ReadOnly, true}, {"read-only", ReadOnly, true}, {"READONLY", ReadOnly, true},
		{"operator", Operator, true}, {" admin ", Admin, true},
		{"", 0, false}, {"root", 0, false}, {"admin2", 0, false},
	} {
		got, err := ParseRole(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseRole(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseRole(%q): %v is not ErrInvalid", tc.in, err)
		}
	}
	if ReadOnly >= Operator || Operator >= Admin {
		t.Error("roles are not ordered read_only < operator < admin")
	}
	if _, err := ParseRole(strings.Repeat("x", 10<<20)); err == nil || len(err.Error()) > 200 {
		t.Errorf("a 10 MB role gave an error of %d bytes", len(err.Error()))
	}
}

func TestCheckNameAndTTL(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"noc-readonly", true}, {"ci.pipeline@corp", true}, {"", false}, {"a b", false},
		{strings.Repeat("a", 64), true}, {strings.Repeat("a", 65), false}, {"x\n", false},
	} {
		if err := CheckName(tc.name); (err == nil) != tc.ok {
			t.Errorf("CheckName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	for _, tc := range []struct {
		ttl time.Duration
		ok  bool
	}{{0, true}, {time.Minute, true}, {time.Second, false}, {-time.Hour, false}, {MaxTTL, true}, {MaxTTL + 1, false}} {
		if err := CheckTTL(tc.ttl); (err == nil) != tc.ok {
			t.Errorf("CheckTTL(%v) = %v, want ok=%v", tc.ttl, err, tc.ok)
		}
	}
}

// TestAuthenticate is the pure decision: bootstrap token, good token,
// wrong secret, unknown id, revoked, expired, malformed.
func TestAuthenticate(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	const id = "0123456789abcdef"
	recs := map[string]Credential{
		id:                 {ID: id, Name: "ops", Role: Operator, Hash: hashSecret("s3cret")},
		"1111111111111111": {ID: "1111111111111111", Role: Admin, Hash: hashSecret("x"), Revoked: true},
		"2222222222222222": {ID: "2222222222222222", Role: ReadOnly, Hash: hashSecret("y"), ExpiresAt: now},
		"3333333333333333": {ID: "3333333333333333", Role: ReadOnly, Hash: hashSecret("z"), ExpiresAt: now.Add(time.Second)},
	}
	lookup := func(id string) (Credential, bool) { c, ok := recs[id]; return c, ok }
	for _, tc := range []struct {
		token string
		want  Role // 0: refused
	}{
		{"bootstrap-token-of-the-file", Admin},
		{id + ".s3cret", Operator},
		{id + ".wrong", 0},
		{"ffffffffffffffff.s3cret", 0},
		{"1111111111111111.x", 0},
		{"2222222222222222.y", 0},
		{"3333333333333333.z", ReadOnly},
		{"", 0}, {".", 0}, {id, 0}, {id + ".", 0}, {"bootstrap-token-of-the-fil", 0},
	} {
		p, err := authenticate(tc.token, "bootstrap-token-of-the-file", lookup, now)
		if tc.want == 0 {
			if err == nil || !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("%q: accepted as %+v (err %v)", tc.token, p, err)
			}
			continue
		}
		if err != nil || p.Role != tc.want {
			t.Errorf("%q: %+v, %v; want role %v", tc.token, p, err, tc.want)
		}
	}
	if _, err := authenticate("anything", "", lookup, now); err == nil {
		t.Error("an empty bootstrap token matched")
	}
}

// TestRevocationReachesEveryReplica runs two Services (two replicas, two
// etcd clients): a credential created on one authenticates on the other,
// and once revoked on the other it is refused on both, without either
// reading etcd to authenticate.
func TestRevocationReachesEveryReplica(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := etcdtest.Start(t)
	a, b := New(e.NewStore(), "boot-token-0123456789", nil), New(e.NewStore(), "boot-token-0123456789", nil)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	for _, s := range []*Service{a, b} {
		if err := s.Load(ctx); err != nil {
			t.Fatal(err)
		}
		go func() { s.Run(runCtx); done <- struct{}{} }()
	}
	defer func() { stop(); <-done; <-done }()

	c, tok, err := a.Create(ctx, "noc", ReadOnly, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := a.Authenticate(tok); err != nil || p.Role != ReadOnly || p.ID != c.ID || p.Name != "noc" {
		t.Fatalf("creating replica: %+v, %v", p, err)
	}
	a.mu.RLock()
	rev := a.rev
	a.mu.RUnlock()
	if err := b.waitApplied(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if p, err := b.Authenticate(tok); err != nil || p.Role != ReadOnly {
		t.Fatalf("other replica: %+v, %v", p, err)
	}
	if strings.Contains(string(mustGet(t, ctx, e, c.ID)), strings.SplitN(tok, ".", 2)[1]) {
		t.Fatal("the secret is stored in etcd")
	}

	r, err := b.Revoke(ctx, c.ID)
	if err != nil || !r.Revoked {
		t.Fatalf("revoke: %+v, %v", r, err)
	}
	if _, err := b.Authenticate(tok); err == nil {
		t.Error("revoking replica still accepts the credential")
	}
	b.mu.RLock()
	rev = b.rev
	b.mu.RUnlock()
	if err := a.waitApplied(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(tok); err == nil {
		t.Error("other replica still accepts the revoked credential")
	}
	if a.Usable(c.ID) {
		t.Error("Usable: revoked credential usable")
	}
	if again, err := a.Revoke(ctx, c.ID); err != nil || !again.RevokedAt.Equal(r.RevokedAt) {
		t.Errorf("revoking twice: %+v, %v", again, err)
	}
	if _, err := a.Revoke(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoke unknown: %v", err)
	}
	if _, err := a.Revoke(ctx, BootstrapID); !errors.Is(err, ErrInvalid) {
		t.Errorf("revoke bootstrap: %v", err)
	}
	if l := a.List(); len(l) != 1 || l[0].ID != c.ID || !l[0].Revoked {
		t.Errorf("List = %+v", l)
	}
	// A refused Create writes nothing.
	if _, _, err := a.Create(ctx, "bad name", Admin, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad name: %v", err)
	}
	if _, _, err := a.Create(ctx, "x", Role(9), 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad role: %v", err)
	}
	if l := a.List(); len(l) != 1 {
		t.Errorf("refused creates wrote something: %d records", len(l))
	}
}

func mustGet(t *testing.T, ctx context.Context, e *etcdtest.Server, id string) []byte {
	t.Helper()
	kv, ok, err := e.NewStore().Get(ctx, Dir+id)
	if err != nil || !ok {
		t.Fatalf("get %s: %v %v", id, ok, err)
	}
	return kv.Value
}
